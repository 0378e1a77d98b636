//! Project chores: `cargo xtask setup | build | run | test | bench | vm-test | image`.
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
    // tcpdump: the journey tests' oracle (the packets seen on each device).
    "tcpdump",
    // tmux: the terminal in which the `--tui` root test types keys and reads the screen.
    "tmux",
    "docker.io",
    "python3",
    // python3-venv: check-jsonschema's venv (target/ci-venv), which validates the CI workflow.
    "python3-venv",
    // perf: the tests' oracle (counts must match), and the benchmark's baseline.
    "linux-perf",
    // bpftrace: the benchmark's peer of aggregate mode (counts per probe and kernel stack).
    "bpftrace",
    // chromium: the HTML report is tested by loading it headless.
    "chromium",
    // libpcap0.8-dev: `--filter` compiles pcap-filter expressions with libpcap (the `libpcap`
    // feature, on by default).
    "libpcap0.8-dev",
    // tshark: tests/pcap.rs reads the pcapng files back with it (tcpdump -r as well).
    "tshark",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// check-jsonschema (PyPI), with GitHub's workflow schema built in: `tests/ci.rs` validates
/// `.github/workflows/datapath.yml` with it.
const CHECK_JSONSCHEMA_VERSION: &str = "0.39.0";
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
    /// Set up, build dockertrace statically and the image `dockertrace:<version>` from it
    /// (`FROM scratch`, on the local engine, nothing pulled): run it as docs/container.md says.
    Image {
        /// The image's tag.
        #[arg(long, default_value_t = default_image_tag())]
        tag: String,
    },
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
        Cmd::Test { setup: s, no_bench, no_vm, args } => {
            setup(s).and_then(|()| test_image(s, &args)).and_then(|()| test(&args)).and_then(|()| {
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
            })
        }
        Cmd::Bench { setup: s, bench } => {
            setup(s).and_then(|()| build_release()).and_then(|()| bench::bench(bench))
        }
        Cmd::VmTest(v) => setup(SetupArgs { no_docker: true }).and_then(|()| vm::vm_test(&v)),
        Cmd::Image { tag } => setup(SetupArgs { no_docker: false }).and_then(|()| image(&tag)),
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
    ci_venv()?;
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

/// A venv under `target/ci-venv` holding check-jsonschema (Debian's python3, not whatever
/// python3 comes first in PATH: the venv module is Debian's python3-venv).
fn ci_venv() -> Result<()> {
    let venv = workspace_root().join("target/ci-venv");
    let exe = venv.join("bin/check-jsonschema");
    let version = Command::new(&exe).arg("--version").output().ok();
    if version.is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(CHECK_JSONSCHEMA_VERSION)) {
        return Ok(());
    }
    step(&format!("installing check-jsonschema {CHECK_JSONSCHEMA_VERSION} into {}", venv.display()));
    let mut c = Command::new("/usr/bin/python3");
    c.args(["-m", "venv", "--clear"]).arg(&venv);
    status(c)?;
    let mut c = Command::new(venv.join("bin/pip"));
    c.args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("check-jsonschema=={CHECK_JSONSCHEMA_VERSION}"));
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

/// The image the container test runs (`tests/container.rs`), built before the tests when
/// they include it: a full run, or a filter naming it. Its static binary is the one the VMs
/// run, so the kernel matrix that follows reuses the build.
fn test_image(s: SetupArgs, args: &[OsString]) -> Result<()> {
    let wanted = args.is_empty() || args.iter().any(|a| a.to_string_lossy().contains("container"));
    if !wanted || s.no_docker || !docker_up() {
        return Ok(());
    }
    image(&default_image_tag())
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

/// `dockertrace:<version>`, the tag `cargo xtask image` gives by default.
fn default_image_tag() -> String {
    format!("dockertrace:{}", env!("CARGO_PKG_VERSION"))
}

/// The Dockerfile of dockertrace's own image. `DOCKERTRACE_IMAGE` tells dockertrace inside
/// it to run its workload containers from this same image (it holds `/dockertrace`). No
/// `dockertrace` label: `dockertrace cleanup` removes what carries one.
fn image_dockerfile(tag: &str) -> String {
    format!(
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/sbin:/usr/bin:/sbin:/bin DOCKERTRACE_IMAGE={tag}\n\
         LABEL org.opencontainers.image.title=dockertrace \
         org.opencontainers.image.version={}\n\
         ENTRYPOINT [\"/dockertrace\"]\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The host programs dockertrace runs — `ip` (links, namespaces), `iptables` (`--inject`,
/// `--runtime netns`'s rules) — copied into the image with the libraries `ldd` names for them,
/// as the workload image carries its binary's; and the directory iptables loads its matches from.
const IMAGE_TOOLS: &[&str] = &["ip", "iptables"];
const XTABLES_DIR: &str = "/usr/lib/x86_64-linux-gnu/xtables";

/// Copies `from` (links followed) to `rootfs` + `to`, executable.
fn put(rootfs: &Path, from: &Path, to: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dest = rootfs.join(to.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().context("no parent")?)?;
    std::fs::copy(from, &dest).with_context(|| format!("cannot copy {}", from.display()))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The shared libraries `ldd` names for `exe` (each `=> /path` and the loader).
fn libraries(exe: &Path) -> Result<Vec<String>> {
    let out = Command::new("ldd").arg(exe).output().context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not found") {
        bail!("{} needs libraries that are not installed:\n{text}", exe.display());
    }
    Ok(text
        .lines()
        .filter_map(|l| l.split("=>").last())
        .filter_map(|l| l.trim().split(" (").next())
        .filter(|p| p.starts_with('/'))
        .map(str::to_owned)
        .collect())
}

/// The image's files under `dir/rootfs`: the static binary, the tools and their libraries,
/// an empty `/tmp` and `/run`.
fn image_rootfs(dir: &Path, exe: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let rootfs = dir.join("rootfs");
    for d in ["tmp", "run"] {
        std::fs::create_dir_all(rootfs.join(d)).context("cannot create the build context")?;
        std::fs::set_permissions(rootfs.join(d), std::fs::Permissions::from_mode(0o1777))?;
    }
    put(&rootfs, exe, "/dockertrace")?;
    let mut libs = std::collections::BTreeSet::new();
    for tool in IMAGE_TOOLS {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .with_context(|| format!("`{tool}` is not installed (cargo xtask setup installs it)"))?;
        // iptables is xtables-nft-multi, which acts as the name it is called by.
        put(&rootfs, &found, &format!("/usr/sbin/{tool}"))?;
        libs.extend(libraries(&found.canonicalize()?)?);
    }
    for entry in std::fs::read_dir(XTABLES_DIR).with_context(|| format!("cannot read {XTABLES_DIR}"))? {
        let path = entry?.path();
        libs.extend(libraries(&path)?);
        put(&rootfs, &path, &path.to_string_lossy())?;
    }
    for lib in libs {
        put(&rootfs, Path::new(&lib), &lib)?;
    }
    Ok(())
}

/// `cargo xtask image`: the static binary (built as for the VMs) in a `FROM scratch` image
/// with the tools it runs; built by the local engine from `target/image/`.
fn image(tag: &str) -> Result<()> {
    let exe = vm::static_dockertrace()?;
    let ldd = Command::new("ldd").arg(&exe).output().context("cannot run ldd")?;
    let said = format!("{}{}", String::from_utf8_lossy(&ldd.stdout), String::from_utf8_lossy(&ldd.stderr));
    if !(said.contains("statically linked") || said.contains("not a dynamic executable")) {
        bail!("{} is not static: {said}", exe.display());
    }
    let dir = workspace_root().join("target/image");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    image_rootfs(&dir, &exe)?;
    std::fs::write(dir.join("Dockerfile"), image_dockerfile(tag))?;
    step(&format!("building image {tag} (FROM scratch: {} and {})", exe.display(), IMAGE_TOOLS.join(", ")));
    let mut c = privileged("docker");
    c.args(["build", "--quiet", "--tag", tag]).arg(&dir);
    status(c)?;
    step(&format!("built {tag}; run it as docs/container.md says"));
    Ok(())
}
