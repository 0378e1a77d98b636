//! Project chores: `cargo xtask setup | build | run | test | bench | vm-test`.
//!
//! Every command first makes sure the machine is ready (idempotently, and in seconds when it
//! already is): Debian packages, bpf-linker on LLVM 22, tracefs, and the Docker engine.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

mod bench;
mod vm;

/// Debian packages the build and the tests need.
/// rustc-web/cargo-web + libstd-rust-web-dev-bpf: a stable rustc with a prebuilt `core` for the
/// BPF targets (no nightly, no rust-src); llvm-22-dev: what bpf-linker links against.
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "iproute2",
    "docker.io",
    "python3",
    // perf: the tests' oracle (counts must match), and the benchmark's baseline.
    "linux-perf",
    // bpftrace: the benchmark's peer of aggregate mode (counts per probe and kernel stack).
    "bpftrace",
    // chromium: the HTML report is tested by loading it headless.
    "chromium",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

#[derive(Parser)]
#[command(name = "cargo xtask", about = "dockertrace's build and test chores")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install and start what dockertrace needs (idempotent).
    Setup(SetupArgs),
    /// Set up, then build the release binary (target/release/dockertrace).
    Build(SetupArgs),
    /// Set up, build, and run dockertrace as root with the given arguments.
    Run {
        #[command(flatten)]
        setup: SetupArgs,
        /// Arguments for dockertrace (after `--`).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Set up, then run every test: host unit tests and the root integration tests, then the
    /// root tests on kernels 5.10, 6.1 and 6.12 in QEMU (`vm-test`).
    Test {
        #[command(flatten)]
        setup: SetupArgs,
        /// Skip the benchmark's smoke run (one round of 2 s) that follows the tests.
        #[arg(long)]
        no_bench: bool,
        /// Skip the kernel matrix in QEMU that follows the host tests.
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Set up, build, and measure what tracing costs, the workload and the tracer pinned to CPUs
    /// of their own: untraced vs dockertrace (default, each --attach, each --stacks, aggregate)
    /// vs perf vs bpftrace, interleaved, with the cost per event and the coverage of adaptive
    /// stacks; writes BENCHMARKS.md and BENCHMARKS.json (needs root).
    Bench {
        #[command(flatten)]
        setup: SetupArgs,
        #[command(flatten)]
        bench: bench::BenchArgs,
    },
    /// Run the root tests on other kernels (5.10, 6.1 and 6.12 by default) in QEMU (TCG): kernels,
    /// QEMU and busybox come from Debian packages, cached under target/vm (no Docker needed).
    VmTest(vm::VmArgs),
}

#[derive(clap::Args, Clone, Copy)]
struct SetupArgs {
    /// Do not install or start the Docker engine.
    #[arg(long)]
    no_docker: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup(s) => setup(s),
        Cmd::Build(s) => setup(s).and_then(|()| build_release()),
        Cmd::Run { setup: s, args } => setup(s).and_then(|()| build_release()).and_then(|()| run(&args)),
        Cmd::Test { setup: s, no_bench, no_vm, args } => setup(s).and_then(|()| test(&args)).and_then(|()| {
            // A filtered run is a quick check: no benchmark, no VMs.
            if !args.is_empty() {
                return Ok(());
            }
            if !no_bench {
                bench_smoke()?;
            }
            if !no_vm {
                vm::vm_test(&vm::VmArgs::default())?;
            }
            Ok(())
        }),
        Cmd::Bench { setup: s, bench } => {
            setup(s).and_then(|()| build_release()).and_then(|()| bench::bench(bench))
        }
        Cmd::VmTest(v) => setup(SetupArgs { no_docker: true }).and_then(|()| vm::vm_test(&v)),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn is_root() -> bool {
    // /proc/self/status "Uid:" real effective ...
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A command run as root: directly when we are root, else through sudo.
fn privileged(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

fn step(what: &str) {
    eprintln!("xtask: {what}");
}

fn status(mut cmd: Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd.status().with_context(|| format!("cannot run {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

fn quiet_ok(mut cmd: Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn setup(args: SetupArgs) -> Result<()> {
    let t = Instant::now();
    apt_packages(args)?;
    bpf_linker()?;
    tracefs()?;
    if !args.no_docker {
        docker()?;
    }
    step(&format!("setup done in {:.1} s", t.elapsed().as_secs_f64()));
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_packages(args: SetupArgs) -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !(args.no_docker && *p == "docker.io"))
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("installing Debian packages: {}", missing.join(" ")));
    let mut update = privileged("apt-get");
    update.args(["update", "-q"]);
    status(update)?;
    let mut install = privileged("apt-get");
    install.env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    status(install)
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn bpf_linker() -> Result<()> {
    let exe = cargo_bin_dir().join("bpf-linker");
    let version = Command::new(&exe)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if version.as_deref().is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    step(&format!("building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes, once)"));
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // /usr/bin/llvm-config is LLVM 14 on Debian 12: point bpf-linker at LLVM 22 explicitly.
    c.env("LLVM_PREFIX", "/usr/lib/llvm-22").args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    status(c)
}

fn tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    step("mounting tracefs on /sys/kernel/tracing");
    let mut c = privileged("mount");
    c.args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]);
    status(c)
}

fn docker_up() -> bool {
    let mut c = privileged("docker");
    c.args(["version", "--format", "{{.Server.Version}}"]);
    quiet_ok(c)
}

fn docker() -> Result<()> {
    if docker_up() {
        return Ok(());
    }
    if Path::new(DOCKER_SOCKET).exists() {
        // A stale socket from an engine that is gone; dockerd recreates it.
        step("removing a stale Docker socket");
    }
    step("starting the Docker engine (dockerd, log in /var/log/dockerd.log)");
    let log = "/var/log/dockerd.log";
    // setsid: the engine outlives this command, in its own session, like a service.
    let mut c = privileged("sh");
    c.args(["-c", &format!("setsid dockerd >>{log} 2>&1 < /dev/null &")]);
    status(c)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if docker_up() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("the Docker engine did not come up within 60 s; see {log}")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    // bpf-linker lives in cargo's bin dir; make sure the inner eBPF build finds it.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if !paths.contains(&cargo_bin_dir()) {
        paths.insert(0, cargo_bin_dir());
    }
    if let Ok(joined) = std::env::join_paths(paths) {
        c.env("PATH", joined);
    }
    c
}

fn build_release() -> Result<()> {
    step("building dockertrace (release)");
    let mut c = cargo();
    c.args(["build", "--release", "-p", "dockertrace"]);
    status(c)
}

fn run(args: &[OsString]) -> Result<()> {
    let exe = workspace_root().join("target/release/dockertrace");
    let mut c = privileged(exe.to_str().context("non-UTF-8 path")?);
    c.args(args);
    let st = c.status().context("cannot start dockertrace")?;
    std::process::exit(st.code().unwrap_or(1));
}

/// The lints, as policy (`[workspace.lints]`): any warning fails. The eBPF object is not built
/// for this (AYA_BUILD_SKIP); its sources are linted through the eBPF crate's host test target.
fn clippy() -> Result<()> {
    step("clippy --workspace --all-targets -- -D warnings");
    let mut c = cargo();
    c.env("AYA_BUILD_SKIP", "1");
    c.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    status(c)
}

fn test(args: &[OsString]) -> Result<()> {
    clippy()?;
    step("running all tests (host unit tests and root integration tests), release build");
    let mut c = cargo();
    // Release: the tests drive the workload at full speed through the binary users run; an
    // unoptimized consumer cannot keep up with the event rate and would (visibly) lose events.
    c.args(["test", "--release", "--workspace", "--exclude", "dockertrace-ebpf"]);
    if !is_root() {
        // Root tests load eBPF programs: run the test binaries through sudo.
        c.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", "sudo -E");
    }
    c.args(args);
    status(c)
}

/// The benchmark's smoke form (it checks that every row is produced, not the numbers).
fn bench_smoke() -> Result<()> {
    step("benchmark smoke run (one round of 2 s over a subset of the variants; `cargo xtask bench` for the real one)");
    build_release()?;
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let mut c = privileged(exe.to_str().context("non-UTF-8 path")?);
    c.args(["bench", "--smoke"]);
    status(c)
}
