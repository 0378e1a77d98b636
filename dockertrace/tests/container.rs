//! dockertrace from its own image (docs/container.md): the documented `docker run` line —
//! privileged, or the fallback where the engine refuses `--privileged` — runs a full `--mode
//! bridge` run against the host's engine: launch, trace, report, clean up. The workload
//! containers are siblings from the same image, and nothing of the run is left behind.
//!
//! Needs root, the engine, and the image `dockertrace:<version>` (`cargo xtask image`; `cargo
//! xtask test` builds it first); otherwise `skipping: <reason>`.
mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const IMAGE: &str = concat!("dockertrace:", env!("CARGO_PKG_VERSION"));

fn docker(args: &[&str]) -> (bool, String, String) {
    match Command::new("docker").args(args).stdin(Stdio::null()).output() {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (false, String::new(), e.to_string()),
    }
}

fn skip_reason() -> Option<String> {
    if let Some(r) = support::skip_reason() {
        return Some(r);
    }
    if !docker(&["version", "--format", "{{.Server.Version}}"]).0 {
        return Some("no Docker engine is reachable (run `cargo xtask setup`)".into());
    }
    if !docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE]).0 {
        return Some(format!("the image {IMAGE} is not built (run `cargo xtask image`)"));
    }
    None
}

/// The `docker run` commands of docs/container.md that run `--mode bridge`: words, with the
/// lines joined at `\` and double quotes removed.
fn documented_bridge_runs() -> Vec<Vec<String>> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/container.md");
    let text = std::fs::read_to_string(&doc).expect("docs/container.md");
    let mut commands = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let code = line.strip_prefix("    ").map(str::trim);
        match (&mut current, code) {
            (None, Some(c)) if c.starts_with("docker run ") => current = Some(c.to_owned()),
            (Some(cmd), Some(c)) => cmd.push_str(c),
            _ => {}
        }
        if let Some(cmd) = &mut current {
            if cmd.ends_with('\\') {
                cmd.pop();
                cmd.push(' ');
            } else {
                commands.push(std::mem::take(cmd));
                current = None;
            }
        }
    }
    commands
        .into_iter()
        .filter(|c| c.ends_with(&format!("{IMAGE} --mode bridge")))
        .map(|c| c.split_whitespace().map(|w| w.replace('"', "")).collect())
        .collect()
}

/// What the run created and the test must see gone: its container, and the run's objects
/// (by the run id dockertrace printed). Removed on drop, also when the test fails.
struct Guard {
    name: String,
    run_id: Arc<Mutex<Option<String>>>,
}

impl Guard {
    fn run_objects(&self) -> Vec<String> {
        let Some(run) = self.run_id.lock().unwrap().clone() else { return Vec::new() };
        let mut left = Vec::new();
        let prefix = format!("name=dockertrace-{run}-");
        for (kind, filter) in [("ps", &prefix), ("network", &format!("label=dockertrace={run}"))] {
            let args: Vec<&str> = match kind {
                "ps" => vec!["ps", "-a", "-q", "--filter", filter],
                _ => vec!["network", "ls", "-q", "--filter", filter],
            };
            left.extend(docker(&args).1.split_whitespace().map(|id| format!("{kind} {id}")));
        }
        let links = Command::new("ip").args(["-o", "link", "show"]).output().expect("ip link");
        let alias = format!("run={run} ");
        left.extend(
            String::from_utf8_lossy(&links.stdout)
                .lines()
                .filter(|l| l.contains(&alias))
                .map(|l| format!("link {l}")),
        );
        left
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
        for obj in self.run_objects() {
            match obj.split_once(' ') {
                Some(("ps", id)) => drop(docker(&["rm", "-f", id])),
                Some(("network", id)) => drop(docker(&["network", "rm", id])),
                _ => eprintln!("left behind: {obj}"),
            }
        }
    }
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs one documented command as `name`, `$PWD` being `out`, with a short workload and a
/// recording. A watchdog removes the container if the run hangs (no assertion is timed: the
/// run then fails on its exit code).
fn run_documented(words: &[String], name: &str, out: &Path, run_id: &Arc<Mutex<Option<String>>>) -> Outcome {
    let pwd = out.to_str().expect("UTF-8 path");
    let mut args: Vec<String> = words[2..].iter().map(|w| w.replace("$PWD", pwd)).collect();
    args.splice(0..0, ["--name".to_owned(), name.to_owned()]);
    args.extend(["--duration", "2", "--record", "bridge.json"].map(String::from));
    let mut child = Command::new("docker")
        .arg("run")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker run");
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut so, &mut s).map(|_| s).unwrap_or_default()
    });
    let mut stderr = String::new();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(&mut se));
    let deadline = Instant::now() + Duration::from_secs(600);
    let watchdog_name = name.to_owned();
    let watchdog = std::thread::spawn(move || {
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            if !docker(&["inspect", "--format", "{{.State.Running}}", &watchdog_name]).0 {
                return;
            }
        }
        eprintln!("the run did not end in 600 s: removing its container");
        let _ = docker(&["rm", "-f", &watchdog_name]);
    });
    for line in lines.by_ref().map_while(Result::ok) {
        // `starting container dockertrace-<run>-server`: the run's objects are named after it.
        if let Some(rest) = line.split("starting container dockertrace-").nth(1) {
            let run = rest.rsplit_once('-').map_or(rest, |(r, _)| r).to_owned();
            run_id.lock().unwrap().get_or_insert(run);
        }
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let code = child.wait().expect("wait for docker run").code().unwrap_or(-1);
    let _ = watchdog.join();
    Outcome { code, stdout: reader.join().unwrap_or_default(), stderr }
}

#[test]
fn the_documented_docker_run_traces_a_bridge_run_and_leaves_nothing() {
    let commands = documented_bridge_runs();
    assert_eq!(commands.len(), 2, "docs/container.md: a privileged and a fallback `--mode bridge` line");
    assert!(commands[0].contains(&"--privileged".to_owned()), "{:?}", commands[0]);
    assert!(commands[1].contains(&"--cap-add".to_owned()), "{:?}", commands[1]);
    if let Some(r) = skip_reason() {
        eprintln!("skipping: {r}");
        return;
    }
    let out: PathBuf = std::env::temp_dir().join(format!("dt-container-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let guard = Guard { name: format!("dt-container-test-{}", std::process::id()), run_id: Arc::default() };
    let mut r = run_documented(&commands[0], &guard.name, &out, &guard.run_id);
    if r.code == 125 && r.stderr.contains("caps") {
        eprintln!("the engine refuses --privileged here ({}): the fallback line", r.stderr.trim());
        r = run_documented(&commands[1], &guard.name, &out, &guard.run_id);
    }
    let recording = std::fs::read_to_string(out.join("bridge.json"));
    // The offline commands need no privilege: the workflow's summary step, from the image.
    let volume = format!("{}:/out", out.display());
    let summary = docker(&[
        "run",
        "--rm",
        "-v",
        &volume,
        "-w",
        "/out",
        IMAGE,
        "report",
        "bridge.json",
        "--format",
        "markdown",
    ]);
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(guard.run_id.lock().unwrap().is_some(), "no workload container started:\n{}", r.stderr);
    // The workload ran from this very image: no workload image was hashed or built.
    assert!(!r.stderr.contains("hashing the workload binary"), "{}", r.stderr);
    // Launched, traced, reported: the workload's figures and the bridge's devices and ladders.
    assert!(r.stdout.contains("bridge") && r.stdout.contains("msg/s"), "{}", r.stdout);
    let rec: serde_json::Value =
        serde_json::from_str(&recording.expect("the recording is written to $PWD")).expect("a recording");
    let run = &rec["runs"][0];
    assert_eq!((run["mode"].as_str(), run["runtime"].as_str()), (Some("bridge"), Some("docker")), "{run}");
    assert!(run["workload"]["messages"].as_u64().is_some_and(|m| m > 0), "{}", run["workload"]);
    let devs: Vec<&str> =
        run["counts"].as_array().unwrap().iter().filter_map(|c| c["dev"].as_str()).collect();
    assert!(devs.contains(&"eth0") && devs.iter().any(|d| d.starts_with("veth")), "{devs:?}");
    assert!(run["journeys"]["directions"].as_array().is_some_and(|d| !d.is_empty()), "no hop ladders");
    assert!(
        summary.0 && summary.1.contains("| bridge |") && summary.1.contains("request ladder"),
        "{summary:?}"
    );
    // Cleaned up: the tool's container is gone (--rm), and so is everything of its run.
    assert!(!docker(&["inspect", &guard.name]).0, "the dockertrace container is still there");
    let left = guard.run_objects();
    assert!(left.is_empty(), "the run left: {left:?}");
}
