//! `cargo xtask vm-test`: the root tests on other kernels, in QEMU (TCG; no KVM needed).
//!
//! Everything comes from Debian packages through `apt-get download` and is cached under
//! `target/vm/` (nothing is installed on the host): the kernels (`linux-image-5.10.0-N-amd64`
//! from bullseye-security through a private apt configuration under `target/vm/apt/`,
//! `linux-image-6.1.0-N-amd64` and `linux-image-6.12.N+deb12-amd64` from the host's lists, the
//! newest the lists know), QEMU with its libraries
//! (unpacked, so the host's newer qemu-utils stays), and busybox. For each kernel an initramfs
//! is built with busybox, iproute2's `ip`, the kernel's modules for the datapaths (veth,
//! bridge, macvlan, ipvlan, ...) and statically linked test binaries; its init runs each test
//! binary and prints markers on the serial console, which the host parses for the verdict.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::{cargo, status, step, workspace_root};

/// The test targets run inside the VMs (integration tests of the `dockertrace` package), each
/// with a test name filter ("" for all). Targets that do not exist in this checkout are left
/// out, so adding one here is all it takes. netns_runtime: its ipvlan test (the host has no
/// ipvlan); its other tests run on the host.
const VM_TESTS: &[(&str, &str)] = &[
    ("root_trace", ""),
    ("kernel_matrix", ""),
    ("journeys", ""),
    ("netns_runtime", "ipvlan"),
    // Drop reasons as each kernel names them (5.10: none), on loopback: no iptables there.
    ("drops", "loopback"),
    // --pcap and --filter through the netns runtime; the static build has no libpcap, so its
    // filter runs take tcpdump -ddd listings (docs/pcap.md).
    ("pcap", ""),
    // The netns overlay: two hosts' VXLAN tunnel, against tcpdump on the underlay.
    ("overlay", "journeys_cross_the_tunnel"),
];

/// The test targets of the VMs' Docker part (`--docker`): the Docker-runtime mode tests, through
/// Debian's Docker engine started by the VM's init: every Docker mode once (ipvlan-l2/-l3
/// included), Ctrl-C mid-run, the engine's user errors. Left to the host (their logic does not
/// depend on the kernel; each traced run costs ~40–60 s in an emulated VM): `--mode all` (the
/// same modes again), the leftover cleanups after SIGKILL, `normal` (no Docker), and the
/// overlay modes (a second engine and a swarm in an emulated VM: minutes; the netns overlay
/// runs in the VMs instead, `tests/overlay.rs`), `trace --container` (the kernel side is
/// `--netns`'s, tested in the VMs by `root_trace`) and the forward-drop fault's tests (the VMs'
/// engine runs without iptables: no DOCKER-USER chain; `tests/drops.rs` provokes the same drop
/// with `--runtime netns` in the VMs).
const DOCKER_VM_TESTS: &[(&str, &str)] = &[(
    "modes",
    "--skip mode_all --skip cleanup_removes_what_a_killed_run_left \
     --skip the_next_run_removes_what_a_killed_run_left --skip normal_mode --skip overlay \
     --skip trace_keeps_one_container --skip forward_drop --skip cleanup_removes_the_rule",
)];

/// The kernels of the Docker part in `cargo xtask test` and `vm-test` without `--docker`: the
/// oldest and the newest (CI's time budget; `--docker --kernel 6.1` runs 6.1's).
const DOCKER_KERNELS: &[&str] = &["5.10", "6.12"];

/// Debian's Docker engine, unpacked under `target/vm/docker` (not installed); the libraries
/// its programs need that the host lacks are added from their dependencies.
const DOCKER_PACKAGES: &[&str] = &["docker.io", "containerd", "runc", "tini"];

/// The engine's programs, at the same paths in the unpacked packages and in the VM.
/// `docker-init` is a link to `tini-static`.
const DOCKER_PROGRAMS: &[&str] = &[
    "usr/sbin/dockerd",
    "usr/bin/docker",
    "usr/bin/containerd",
    "usr/bin/containerd-shim-runc-v2",
    "usr/sbin/runc",
    "usr/bin/tini-static",
];

/// Modules loaded in each VM (dependencies are resolved from the modules themselves).
const MODULES: &[&str] = &["veth", "bridge", "br_netfilter", "macvlan", "ipvlan", "dummy", "vxlan"];

/// QEMU and what it needs beyond a Debian 12 base: qemu-system-x86's dependencies that are not
/// installed on the host are added to these.
const QEMU_PACKAGES: &[&str] =
    &["qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios", "ipxe-qemu"];

const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(clap::Args, Clone)]
pub struct VmArgs {
    /// Kernel series to test (repeatable): `5.10` (bullseye-security, through a private apt
    /// configuration under target/vm/apt), `6.1` (bookworm) or `6.12` (bookworm's +deb12
    /// backport), or an exact Debian package name `linux-image-...-amd64`.
    #[arg(long = "kernel", default_values = ["5.10", "6.1", "6.12"])]
    pub kernels: Vec<String>,
    /// Go on with the next kernel after one fails.
    #[arg(long)]
    pub keep_going: bool,
    /// Seconds one VM may run before it is killed (and counted as a failure).
    #[arg(long, default_value_t = 1200)]
    pub timeout: u64,
    /// VMs run at once (each has 2 vCPUs; the tests in one VM mostly keep one busy).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Memory of each VM, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Test name filter passed to every test binary (like `cargo test FILTER`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Only the Docker part: a boot per `--kernel` with Debian's Docker engine running the
    /// Docker-runtime mode tests (`DOCKER_VM_TESTS`). Without it, the Docker part runs on
    /// those of `--kernel` that are in `--docker-kernel`.
    #[arg(long, conflicts_with = "no_docker")]
    pub docker: bool,
    /// Kernel series whose Docker part runs when both parts run (repeatable).
    #[arg(long = "docker-kernel", default_values = DOCKER_KERNELS)]
    pub docker_kernels: Vec<String>,
    /// Only the netns part (`VM_TESTS`), no Docker boots.
    #[arg(long)]
    pub no_docker: bool,
    /// Seconds the Docker boot of one kernel may run before it is killed (a failure; it takes
    /// ~7.5 min on 6.12, ~9.5 on 5.10 here).
    #[arg(long, default_value_t = 900)]
    pub docker_timeout: u64,
}

/// What one VM boot runs: the netns part (`VM_TESTS`) or the Docker part (`DOCKER_VM_TESTS`,
/// with the engine started by the init).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    Netns,
    Docker,
}

impl Part {
    fn tests(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Part::Netns => VM_TESTS,
            Part::Docker => DOCKER_VM_TESTS,
        }
    }

    fn timeout(self, args: &VmArgs) -> u64 {
        match self {
            Part::Netns => args.timeout,
            Part::Docker => args.docker_timeout,
        }
    }

    /// The boot's name in logs and summaries: the kernel release, `+docker` for the Docker part.
    fn label(self, release: &str) -> String {
        match self {
            Part::Netns => release.to_owned(),
            Part::Docker => format!("{release}+docker"),
        }
    }
}

/// One VM boot: a kernel, the initramfs of one part.
struct Vm {
    kernel: Kernel,
    part: Part,
    initrd: PathBuf,
}

impl Vm {
    fn label(&self) -> String {
        self.part.label(&self.kernel.release)
    }
}

impl Default for VmArgs {
    /// What `cargo xtask test` runs.
    fn default() -> VmArgs {
        VmArgs {
            kernels: vec!["5.10".into(), "6.1".into(), "6.12".into()],
            keep_going: true,
            timeout: 1200,
            jobs: 2,
            memory: 2048,
            filter: None,
            docker: false,
            docker_kernels: DOCKER_KERNELS.iter().map(|k| k.to_string()).collect(),
            no_docker: false,
            docker_timeout: 900,
        }
    }
}

fn vm_dir() -> PathBuf {
    workspace_root().join("target/vm")
}

pub fn vm_test(args: &VmArgs) -> Result<()> {
    let t = Instant::now();
    let cache = vm_dir().join("cache");
    fs::create_dir_all(&cache)?;
    let parts = match (args.docker, args.no_docker) {
        (true, _) => vec![Part::Docker],
        (false, true) => vec![Part::Netns],
        (false, false) => vec![Part::Netns, Part::Docker],
    };
    let qemu = Qemu::prepare(&cache)?;
    let busybox = busybox(&cache)?;
    let engine = if parts.contains(&Part::Docker) { Some(DockerEngine::prepare(&cache)?) } else { None };
    let wanted: Vec<&str> = parts.iter().flat_map(|p| p.tests().iter().map(|(t, _)| *t)).collect();
    let mut bins = static_binaries(&wanted)?;
    if engine.is_some() {
        bins.image = Some(workload_image_tar(&bins.dockertrace)?);
    }
    step(&format!(
        "VM test binaries: {}",
        bins.tests.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
    ));
    // Kernels and their initramfs first (downloads, one at a time), then the VMs, `jobs` at
    // once: a VM's tests mostly run one thread (the verifier, one test at a time), so two VMs
    // keep both host cores busy where one leaves the second mostly idle.
    let mut prepared = Vec::new();
    for k in &args.kernels {
        let kernel = Kernel::prepare(&cache, k)?;
        for &part in &parts {
            if part == Part::Docker && !args.docker && !args.docker_kernels.contains(k) {
                continue;
            }
            let initrd = initramfs(&kernel, part, &busybox, &bins, engine.as_ref(), args.filter.as_deref())?;
            prepared.push(Vm { kernel: kernel.clone(), part, initrd });
        }
    }
    let outcomes = boot_all(&qemu, &prepared, args);
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for (vm, outcome) in prepared.iter().zip(outcomes) {
        let Some(outcome) = outcome else {
            summary
                .push(format!("{}: not run (an earlier kernel failed; --keep-going runs all)", vm.label()));
            continue;
        };
        let outcome = outcome?;
        summary.push(outcome.summary(&vm.label()));
        if !outcome.passed() {
            outcome.show_failures(&vm.label());
            failed.push(vm.label());
        }
    }
    step(&format!("VM matrix done in {:.0} s:", t.elapsed().as_secs_f64()));
    for l in &summary {
        eprintln!("  {l}");
    }
    if !failed.is_empty() {
        bail!("VM tests failed on {}", failed.join(", "));
    }
    Ok(())
}

/// Boots every prepared VM, `args.jobs` at a time, in the order given; `None` for a VM not
/// started because an earlier one failed (without `--keep-going`).
fn boot_all(qemu: &Qemu, prepared: &[Vm], args: &VmArgs) -> Vec<Option<Result<Outcome>>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let results = std::sync::Mutex::new((0..prepared.len()).map(|_| None).collect::<Vec<_>>());
    std::thread::scope(|s| {
        for _ in 0..args.jobs.clamp(1, prepared.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= prepared.len() || stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let vm = &prepared[i];
                let outcome = qemu.boot_retrying_an_emulator_crash(vm, args);
                match &outcome {
                    Ok(o) => {
                        eprintln!("{}", o.summary(&vm.label()));
                        if !o.passed() && !args.keep_going {
                            stop.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    Err(_) => stop.store(true, std::sync::atomic::Ordering::SeqCst),
                }
                results.lock().expect("no panic while held")[i] = Some(outcome);
            });
        }
    });
    results.into_inner().expect("no panic while held")
}

// ---------------------------------------------------------------------------------------------
// Debian packages

/// Where apt looks for packages: the host's own configuration, or a private one under
/// `target/vm/apt/<suite>/` for a Debian suite the host does not list (bullseye-security's 5.10
/// kernels). The private one has its own sources list, package lists and cache (`-o` options on
/// each apt command): nothing in the host's apt configuration or lists changes.
struct Apt {
    /// The suite of a private configuration (`None`: the host's).
    suite: Option<String>,
    /// The `-o` options of the private configuration.
    options: Vec<String>,
}

impl Apt {
    fn host() -> Apt {
        Apt { suite: None, options: Vec::new() }
    }

    /// A private configuration for `suite` of the host's own `debian-security` mirror.
    fn security_suite(suite: &str) -> Result<Apt> {
        let dir = vm_dir().join("apt").join(suite);
        let lists = dir.join("lists");
        let cache = dir.join("cache");
        fs::create_dir_all(lists.join("partial"))?;
        fs::create_dir_all(&cache)?;
        let uri = host_security_uri().context(
            "the host's apt sources have no debian-security mirror (an entry whose URI ends in \
             /debian-security) to fetch bullseye-security from",
        )?;
        let sources = dir.join("sources.list");
        let line =
            format!("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {uri} {suite} main\n");
        if fs::read_to_string(&sources).ok().as_deref() != Some(line.as_str()) {
            fs::write(&sources, &line)?;
        }
        let o = |k: &str, v: &Path| format!("{k}={}", v.display());
        let options = vec![
            o("Dir::Etc::SourceList", &sources),
            "Dir::Etc::SourceParts=/dev/null".to_owned(),
            o("Dir::State::Lists", &lists),
            o("Dir::Cache", &cache),
        ];
        Ok(Apt { suite: Some(suite.to_owned()), options })
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for o in &self.options {
            c.arg("-o").arg(o);
        }
        c
    }

    /// Whether the private configuration has fetched its package lists yet.
    fn has_lists(&self) -> bool {
        self.options.iter().filter_map(|o| o.strip_prefix("Dir::State::Lists=")).any(|d| {
            fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
    }

    /// `apt-get update`: the host's lists (as root), or the private configuration's own.
    fn update(&self) -> Result<()> {
        let mut u = match &self.suite {
            None => crate::privileged("apt-get"),
            Some(suite) => {
                step(&format!("apt-get update of {suite} (private apt configuration under target/vm/apt)"));
                self.command("apt-get")
            }
        };
        u.args(["update", "-q"]);
        status(u)
    }

    fn lines(&self, args: &[&str]) -> Result<Vec<String>> {
        let mut c = self.command("apt-cache");
        let out = c.args(args).output().context("cannot run apt-cache")?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
    }

    /// `apt-get download` into `dir` (one try).
    fn download(&self, dir: &Path, pkgs: &[&String]) -> Result<()> {
        let mut c = self.command("apt-get");
        c.current_dir(dir).args(["download", "-q"]).args(pkgs);
        status(c)
    }
}

/// The URI of the host's `debian-security` mirror, from its apt sources (one-line `deb` entries
/// and deb822 `URIs:` fields; comments are not entries).
fn host_security_uri() -> Option<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    let mut parts: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
        .collect();
    parts.sort();
    files.extend(parts);
    files.iter().filter_map(|f| fs::read_to_string(f).ok()).find_map(|text| security_uri_in(&text))
}

/// The first `.../debian-security` URI of an apt sources file's entries.
fn security_uri_in(text: &str) -> Option<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .flat_map(|l| {
            let uris: Vec<&str> = if let Some(rest) = l.strip_prefix("URIs:") {
                rest.split_whitespace().collect()
            } else if l.starts_with("deb ") {
                // deb [options] URI suite components
                let rest = l.trim_start_matches("deb ").trim_start();
                let rest = match rest.strip_prefix('[') {
                    Some(r) => r.split_once(']').map_or("", |(_, after)| after),
                    None => rest,
                };
                rest.split_whitespace().take(1).collect()
            } else {
                Vec::new()
            };
            uris.into_iter().map(str::to_owned).collect::<Vec<_>>()
        })
        .find(|u| u.trim_end_matches('/').ends_with("/debian-security"))
        .map(|u| u.trim_end_matches('/').to_owned())
}

/// One `apt-get download` of `pkg` into `dir` (no refresh of the lists on failure).
fn download_once(dir: &Path, pkg: &String, apt: &Apt) -> Result<()> {
    step(&format!("downloading {pkg}"));
    apt.download(dir, &[pkg])
}

/// `apt-get download` into `dir`, once (a `.deb` for the package already there is kept).
fn download(dir: &Path, pkgs: &[String], apt: &Apt) -> Result<()> {
    let missing: Vec<&String> = pkgs.iter().filter(|p| cached_deb(dir, p).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("downloading {}", missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")));
    if apt.download(dir, &missing).is_err() {
        // The package lists may be missing or stale on a fresh machine.
        apt.update()?;
        apt.download(dir, &missing)?;
    }
    Ok(())
}

/// The cached `.deb` of package `pkg` (`pkg_VERSION_ARCH.deb`).
fn cached_deb(dir: &Path, pkg: &str) -> Option<PathBuf> {
    let prefix = format!("{pkg}_");
    fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
    })
}

/// Unpacks a `.deb` into `into` (`dpkg-deb -x`: files only, nothing is installed).
fn unpack(deb: &Path, into: &Path) -> Result<()> {
    fs::create_dir_all(into)?;
    let mut c = Command::new("dpkg-deb");
    c.arg("-x").arg(deb).arg(into);
    status(c)
}

fn installed_on_host(pkg: &str) -> bool {
    crate::installed(pkg)
}

// ---------------------------------------------------------------------------------------------
// QEMU

struct Qemu {
    root: PathBuf,
}

impl Qemu {
    fn prepare(cache: &Path) -> Result<Qemu> {
        let root = vm_dir().join("qemu");
        let q = Qemu { root };
        if q.works() {
            return Ok(q);
        }
        step("fetching QEMU from Debian packages (unpacked under target/vm/qemu, not installed)");
        let mut pkgs: BTreeSet<String> = QEMU_PACKAGES.iter().map(|s| s.to_string()).collect();
        for d in direct_depends("qemu-system-x86")? {
            if !installed_on_host(&d) {
                pkgs.insert(d);
            }
        }
        // The libraries' own dependencies, one level further (e.g. librdmacm1 → libibverbs1).
        for p in pkgs.clone() {
            if p.starts_with("lib") {
                for d in direct_depends(&p)? {
                    if !installed_on_host(&d) {
                        pkgs.insert(d);
                    }
                }
            }
        }
        let pkgs: Vec<String> = pkgs.into_iter().collect();
        download(cache, &pkgs, &Apt::host())?;
        let _ = fs::remove_dir_all(&q.root);
        for p in &pkgs {
            unpack(&cached_deb(cache, p).with_context(|| format!("{p} was not downloaded"))?, &q.root)?;
        }
        ensure!(q.works(), "the unpacked QEMU does not run: {}", q.missing_libs());
        Ok(q)
    }

    fn exe(&self) -> PathBuf {
        self.root.join("usr/bin/qemu-system-x86_64")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(self.exe());
        c.env("LD_LIBRARY_PATH", self.lib_path());
        c
    }

    /// Where the unpacked packages keep their libraries: bookworm's packages are not all
    /// merged-/usr (libnl-3-200 installs into /lib), and the host may not have them either.
    fn lib_path(&self) -> std::ffi::OsString {
        unpacked_lib_path(&self.root)
    }

    fn works(&self) -> bool {
        self.exe().exists()
            && crate::quiet_ok({
                let mut c = self.command();
                c.arg("--version");
                c
            })
    }

    fn missing_libs(&self) -> String {
        let out = Command::new("ldd").arg(self.exe()).env("LD_LIBRARY_PATH", self.lib_path()).output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains("not found"))
                .map(|l| l.trim().to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
    }

    /// Boots `vm`, and once more if the first boot failed in a way that says nothing about
    /// dockertrace (`Outcome::emulator_crash`): multi-threaded TCG (our QEMU is bookworm's 7.2)
    /// can run code the guest kernel has already patched, so a CPU traps on an `int3` that is
    /// no longer there (a known race: LKML, July 2023, "qemu-x86_64 booting with 8.0.0 still see
    /// int3"; Red Hat bug 2216496). Seen here in a 6.12 guest's own initcalls, 5 s into its
    /// boot, and once while runc exec'd. The first console is kept as
    /// `<label>.first-boot.log` and the summary says the VM was booted twice, and why.
    fn boot_retrying_an_emulator_crash(&self, vm: &Vm, args: &VmArgs) -> Result<Outcome> {
        let first = self.boot(vm, args)?;
        let Some(why) = first.emulator_crash() else { return Ok(first) };
        let kept = first.log.with_extension("first-boot.log");
        let _ = fs::rename(&first.log, &kept);
        step(&format!("{}: {why} (console kept in {}); booting it once more", vm.label(), kept.display()));
        let mut second = self.boot(vm, args)?;
        second.first_boot_crash = Some(why);
        Ok(second)
    }

    /// Boots `kernel` with `initrd`, streams the serial console to `target/vm/<release>.log`
    /// (markers and test results also to stderr) and parses the outcome.
    fn boot(&self, vm: &Vm, args: &VmArgs) -> Result<Outcome> {
        let (kernel, initrd) = (&vm.kernel, &vm.initrd);
        let log_path = vm_dir().join(format!("{}.log", vm.label()));
        step(&format!(
            "booting {} in QEMU (TCG), serial log in {}",
            vm.label(),
            log_path.strip_prefix(workspace_root()).unwrap_or(&log_path).display()
        ));
        let share = self.root.join("usr/share");
        let mut c = self.command();
        c.args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", &args.memory.to_string()])
            .args(["-nic", "none", "-nographic", "-no-reboot", "-monitor", "none", "-serial", "stdio"])
            .arg("-L")
            .arg(share.join("qemu"))
            .arg("-L")
            .arg(share.join("seabios"))
            .arg("-L")
            .arg(self.root.join("usr/lib/ipxe/qemu"))
            .arg("-kernel")
            .arg(&kernel.image)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=4"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let started = Instant::now();
        let mut child = c.spawn().context("cannot start qemu-system-x86_64")?;
        let stdout = child.stdout.take().expect("piped");
        let tag = match vm.part {
            Part::Netns => kernel.series.clone(),
            Part::Docker => format!("{}+docker", kernel.series),
        };
        let log_file = log_path.clone();
        let reader = std::thread::spawn(move || -> Vec<String> {
            let mut log = fs::File::create(&log_file).ok();
            let mut lines = Vec::new();
            // A test's line ends when it finished: the time since the previous marker or result
            // is what it took (for the CI budget; never asserted).
            let mut last = started;
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
                if let Some(f) = log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if line.starts_with("DT-VM") || line.starts_with("test ") && !line.ends_with(" ... ") {
                    let now = Instant::now();
                    let (at, took) = ((now - started).as_secs(), (now - last).as_secs_f64());
                    if line.starts_with("test ") && !line.starts_with("test result:") {
                        eprintln!("[{tag} {at:>3} s] {line} ({took:.1} s)");
                    } else {
                        eprintln!("[{tag} {at:>3} s] {line}");
                    }
                    last = now;
                }
                lines.push(line);
            }
            lines
        });
        let deadline = started + Duration::from_secs(vm.part.timeout(args));
        let mut timed_out = false;
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                // Our own QEMU, by its pid.
                let _ = child.kill();
                let _ = child.wait();
                timed_out = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let lines = reader.join().unwrap_or_default();
        Ok(Outcome::parse(&lines, timed_out, started.elapsed(), log_path))
    }
}

/// A package's direct dependencies (first alternative of each), from apt's lists.
fn direct_depends(pkg: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut alternative = false;
    for l in Apt::host().lines(&["depends", pkg])? {
        let t = l.trim();
        let (is_dep, rest) = if let Some(r) = t.strip_prefix("|Depends: ") {
            (true, r)
        } else if let Some(r) = t.strip_prefix("Depends: ") {
            (true, r)
        } else {
            (false, "")
        };
        if is_dep && !alternative && !rest.starts_with('<') {
            out.push(rest.split(':').next().unwrap_or(rest).to_owned());
        }
        if is_dep {
            alternative = t.starts_with('|');
        }
    }
    Ok(out)
}

fn busybox(cache: &Path) -> Result<PathBuf> {
    let exe = vm_dir().join("busybox/bin/busybox");
    if !exe.exists() {
        download(cache, &["busybox-static".to_owned()], &Apt::host())?;
        unpack(&cached_deb(cache, "busybox-static").context("busybox-static")?, &vm_dir().join("busybox"))?;
    }
    Ok(exe)
}

// ---------------------------------------------------------------------------------------------
// Docker engine

/// Debian's Docker engine (`DOCKER_PACKAGES`), unpacked under `target/vm/docker`.
struct DockerEngine {
    root: PathBuf,
}

impl DockerEngine {
    fn prepare(cache: &Path) -> Result<DockerEngine> {
        let e = DockerEngine { root: vm_dir().join("docker") };
        if e.complete() {
            return Ok(e);
        }
        step("fetching Debian's Docker engine (unpacked under target/vm/docker, not installed)");
        let mut pkgs: BTreeSet<String> = DOCKER_PACKAGES.iter().map(|s| s.to_string()).collect();
        // The libraries the host lacks (e.g. libseccomp2 for runc), and theirs, one level further.
        let mut libs = BTreeSet::new();
        for p in DOCKER_PACKAGES {
            libs.extend(direct_depends(p)?.into_iter().filter(|d| d.starts_with("lib")));
        }
        for l in libs.clone() {
            libs.extend(direct_depends(&l)?.into_iter().filter(|d| d.starts_with("lib")));
        }
        pkgs.extend(libs.into_iter().filter(|l| !installed_on_host(l)));
        let pkgs: Vec<String> = pkgs.into_iter().collect();
        download(cache, &pkgs, &Apt::host())?;
        let _ = fs::remove_dir_all(&e.root);
        for p in &pkgs {
            unpack(&cached_deb(cache, p).with_context(|| format!("{p} was not downloaded"))?, &e.root)?;
        }
        ensure!(e.complete(), "the unpacked Docker packages lack one of {DOCKER_PROGRAMS:?}");
        Ok(e)
    }

    fn complete(&self) -> bool {
        DOCKER_PROGRAMS.iter().all(|p| self.root.join(p).is_file())
    }

    /// The engine's programs and their libraries into the initramfs; `docker-init` (a link to
    /// `tini-static` in the package) as a copy.
    fn add_to(&self, files: &mut Vec<(String, Entry)>) -> Result<()> {
        for p in DOCKER_PROGRAMS {
            program_with_libs(files, &self.root.join(p), p, Some(&self.root))?;
        }
        let tini = fs::read(self.root.join("usr/bin/tini-static"))?;
        files.push(("usr/bin/docker-init".into(), Entry::File(tini, 0o755)));
        // Docker reads the host's resolv.conf for its containers; none here (no network card).
        files.push(("etc/resolv.conf".into(), Entry::File(b"# no network in the VM\n".to_vec(), 0o644)));
        Ok(())
    }
}

/// The tag of the workload image the Docker part's VMs load (`docker load`); the init exports it
/// as `DOCKERTRACE_IMAGE`, so dockertrace runs its containers from it instead of building an
/// image from its own binary (which needs `ldd`, absent from the VM).
const VM_IMAGE_TAG: &str = "dockertrace-vm:workload";

/// Writes the workload image of the Docker part as `docker save` does (a `manifest.json`, the
/// image's config, one layer), at `target/vm/workload-image.tar`: the static `dockertrace` at
/// `/dockertrace` (the entrypoint) and an empty `/tmp`. Built with `tar` and `sha256sum`: no
/// Docker engine is needed on the host.
fn workload_image_tar(dockertrace: &Path) -> Result<PathBuf> {
    let dir = vm_dir().join("image");
    let _ = fs::remove_dir_all(&dir);
    let (rootfs, out) = (dir.join("rootfs"), dir.join("out"));
    fs::create_dir_all(rootfs.join("tmp"))?;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::create_dir_all(out.join("layer"))?;
    fs::copy(dockertrace, rootfs.join("dockertrace"))?;
    fs::set_permissions(rootfs.join("dockertrace"), fs::Permissions::from_mode(0o755))?;
    let tar = |from: &Path, to: &Path, what: &[&str]| {
        let mut c = Command::new("tar");
        c.args(["--numeric-owner", "--owner=0", "--group=0", "--sort=name", "-C"])
            .arg(from)
            .arg("-cf")
            .arg(to)
            .args(what);
        status(c)
    };
    tar(&rootfs, &out.join("layer/layer.tar"), &["."])?;
    let diff_id = sha256_of(&out.join("layer/layer.tar"))?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": ["/dockertrace"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
    });
    let config_path = out.join("config.json");
    fs::write(&config_path, serde_json::to_vec(&config)?)?;
    let config_name = format!("{}.json", sha256_of(&config_path)?);
    fs::rename(&config_path, out.join(&config_name))?;
    let manifest = serde_json::json!([{ "Config": config_name, "RepoTags": [VM_IMAGE_TAG], "Layers": ["layer/layer.tar"] }]);
    fs::write(out.join("manifest.json"), serde_json::to_vec(&manifest)?)?;
    let image = vm_dir().join("workload-image.tar");
    tar(&out, &image, &["manifest.json", &config_name, "layer/layer.tar"])?;
    Ok(image)
}

/// The hex SHA-256 of a file (`sha256sum`).
fn sha256_of(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output().context("cannot run sha256sum")?;
    ensure!(out.status.success(), "sha256sum {} failed", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or("");
    ensure!(hex.len() == 64, "sha256sum said {text:?}");
    Ok(hex.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Kernels

#[derive(Clone)]
struct Kernel {
    /// What the user asked for (`6.1`).
    series: String,
    /// `uname -r` (`6.1.0-56-amd64`).
    release: String,
    image: PathBuf,
    /// The unpacked package (`lib/modules/<release>/...`).
    root: PathBuf,
}

/// Orders Debian kernel package names by their numbers (`6.1.0-9` < `6.1.0-56`).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The kernel series `vm-test` knows: (series, Debian suite a private apt configuration
/// fetches it from, or `None` for the host's own lists).
const SERIES: &[(&str, Option<&str>)] = &[("5.10", Some("bullseye-security")), ("6.1", None), ("6.12", None)];

fn kernel_package_matches(series: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix("linux-image-") else { return false };
    let Some(rest) = rest.strip_suffix("-amd64") else { return false };
    let number = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit());
    match series {
        // linux-image-5.10.0-46-amd64 (bullseye-security)
        "5.10" => rest.strip_prefix("5.10.0-").is_some_and(number),
        // linux-image-6.1.0-56-amd64
        "6.1" => rest.strip_prefix("6.1.0-").is_some_and(number),
        // linux-image-6.12.117+deb12-amd64
        "6.12" => rest.strip_prefix("6.12.").and_then(|r| r.strip_suffix("+deb12")).is_some_and(number),
        _ => false,
    }
}

impl Kernel {
    fn prepare(cache: &Path, series: &str) -> Result<Kernel> {
        let pkg = if series.starts_with("linux-image-") {
            let apt = match series.strip_prefix("linux-image-5.10.") {
                Some(_) => Apt::security_suite("bullseye-security")?,
                None => Apt::host(),
            };
            download(cache, &[series.to_owned()], &apt)?;
            series.to_owned()
        } else {
            let Some(&(_, suite)) = SERIES.iter().find(|(s, _)| *s == series) else {
                let known: Vec<&str> = SERIES.iter().map(|(s, _)| *s).collect();
                bail!("unknown kernel series {series:?} ({})", known.join(", "));
            };
            let apt = match suite {
                Some(suite) => Apt::security_suite(suite)?,
                None => Apt::host(),
            };
            if apt.suite.is_some() && !apt.has_lists() {
                // First use: fetch the private lists (offline, the cached .deb still serves).
                if let Err(e) = apt.update() {
                    eprintln!("xtask: warning: {e:#}");
                }
            }
            let pkg = Self::resolve(cache, series, &apt)?;
            if cached_deb(cache, &pkg).is_none() && download_once(cache, &pkg, &apt).is_err() {
                // Stale lists name a package the mirror no longer has: refresh, resolve again.
                apt.update()?;
                let pkg = Self::resolve(cache, series, &apt)?;
                download_once(cache, &pkg, &apt)?;
                pkg
            } else {
                pkg
            }
        };
        let release = pkg.trim_start_matches("linux-image-").to_owned();
        let root = vm_dir().join("kernels").join(&release);
        let image = root.join(format!("boot/vmlinuz-{release}"));
        if !image.exists() {
            step(&format!("unpacking {pkg}"));
            let _ = fs::remove_dir_all(&root);
            unpack(&cached_deb(cache, &pkg).context("kernel package")?, &root)?;
        }
        ensure!(image.exists(), "{pkg} has no {}", image.display());
        Ok(Kernel { series: series.to_owned(), release, image, root })
    }

    /// The newest package of the series that apt knows of; offline, the newest one cached.
    fn resolve(cache: &Path, series: &str, apt: &Apt) -> Result<String> {
        let mut names: Vec<String> = apt
            .lines(&["search", "--names-only", &format!("^linux-image-{series}")])?
            .into_iter()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .filter(|n| kernel_package_matches(series, n))
            .collect();
        if names.is_empty() {
            names = fs::read_dir(cache)?
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.split('_').next()).map(str::to_owned))
                .filter(|n| kernel_package_matches(series, n))
                .collect();
        }
        names.sort_by_key(|n| version_key(n));
        names.pop().with_context(|| {
            format!(
                "no Debian package for kernel {series} (linux-image-{series}...-amd64); try `apt-get update`"
            )
        })
    }

    fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    /// The module files (by name) under the kernel's module tree.
    fn module_files(&self) -> BTreeMap<String, PathBuf> {
        fn walk(dir: &Path, out: &mut BTreeMap<String, PathBuf>) {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                    if let Some(m) = n.strip_suffix(".ko").or_else(|| n.strip_suffix(".ko.xz")) {
                        out.insert(m.replace('-', "_"), p.clone());
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.modules_dir().join("kernel"), &mut out);
        out
    }
}

/// A module's bytes, decompressed.
fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz").arg("-dc").arg(path).output().context("cannot run xz")?;
        ensure!(out.status.success(), "xz -dc {} failed", path.display());
        Ok(out.stdout)
    } else {
        Ok(fs::read(path)?)
    }
}

/// The `depends=` entry of a module's `.modinfo`.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    ko.windows(key.len() + 1)
        .position(|w| w[0] == 0 && &w[1..] == key)
        .map(|i| {
            let start = i + 1 + key.len();
            let end = ko[start..].iter().position(|&b| b == 0).map_or(ko.len(), |e| start + e);
            String::from_utf8_lossy(&ko[start..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Static test binaries

struct Binaries {
    dockertrace: PathBuf,
    /// The Docker part's workload image (`docker save` format), from `dockertrace`.
    image: Option<PathBuf>,
    /// (test target, executable)
    tests: Vec<(String, PathBuf)>,
}

/// Builds the `dockertrace` binary and the VM test targets statically linked (glibc
/// `+crt-static`; build scripts stay dynamic), under `target/x86_64-unknown-linux-gnu/`.
fn static_binaries(wanted: &[&str]) -> Result<Binaries> {
    let present: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|t| workspace_root().join(format!("dockertrace/tests/{t}.rs")).exists())
        .collect();
    step(
        "building static dockertrace and test binaries for the VMs (release; the first build takes ~10 min)",
    );
    let mut c = cargo();
    c.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["test", "--release", "--no-run", "--target", STATIC_TARGET, "-p", "dockertrace", "--bins"])
        // Without libpcap (its static archive needs libdbus and libsystemd): `--filter` says so.
        .arg("--no-default-features")
        .args(present.iter().flat_map(|t| ["--test", t]))
        .args(["--message-format", "json-render-diagnostics"])
        .stdout(Stdio::piped());
    let out = c.output().context("cannot run cargo")?;
    ensure!(out.status.success(), "static build of the test binaries failed");
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(exe), Some(name)) = (v["executable"].as_str(), v["target"]["name"].as_str()) else {
            continue;
        };
        let is_test = v["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "test"));
        if is_test && present.contains(&name) {
            tests.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    tests.sort_by_key(|(n, _)| present.iter().position(|p| p == n));
    ensure!(tests.len() == present.len(), "cargo did not report every VM test binary: {tests:?}");
    // `--bins` builds the binary but `cargo test` reports only the test harness of it: the
    // binary itself sits in the profile directory.
    let dockertrace = static_dockertrace()?;
    Ok(Binaries { dockertrace, image: None, tests })
}

/// Builds the `dockertrace` binary statically linked (glibc `+crt-static`), under
/// `target/x86_64-unknown-linux-gnu/release/`; also the binary of `cargo xtask image`.
pub(crate) fn static_dockertrace() -> Result<PathBuf> {
    let dockertrace = workspace_root().join(format!("target/{STATIC_TARGET}/release/dockertrace"));
    let mut b = cargo();
    b.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", "-C target-feature=+crt-static").args([
        "build",
        "--release",
        "--target",
        STATIC_TARGET,
        "-p",
        "dockertrace",
        "--bin",
        "dockertrace",
        // Without libpcap (its static archive needs libdbus and libsystemd): `--filter` says so.
        "--no-default-features",
        "-q",
    ]);
    status(b)?;
    ensure!(dockertrace.exists(), "no {}", dockertrace.display());
    Ok(dockertrace)
}

// ---------------------------------------------------------------------------------------------
// Initramfs

/// The init of the VMs: mounts, loads modules, runs the tests, powers off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t tracefs nodev /sys/kernel/tracing
mount -t debugfs nodev /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
ln -s /run /var/run
ip link set lo up
hostname dt-vm
for m in $(cat /etc/modules.order); do
  insmod "/lib/modules/$m.ko" || echo "DT-VM-WARN insmod $m failed"
done
echo "DT-VM-KERNEL $(uname -r)"
echo "DT-VM-KPROBES $(test -e /sys/bus/event_source/devices/kprobe/type && echo yes || echo no)"
export DOCKERTRACE_BIN=/dt/dockertrace RUST_BACKTRACE=1 HOME=/root DOCKERTRACE_TEST_VM=1
if [ -x /dt/docker-start ]; then
  # The Docker part: the tests must find the engine (a missing one fails them, never skips).
  export DOCKERTRACE_TEST_VM_DOCKER=1 DOCKERTRACE_IMAGE="$(cat /dt/image-tag)"
  /dt/docker-start
fi
cd /tmp
while read t f; do
  g="$(cat /dt/filter)"
  [ -n "$g" ] && f="$g"
  echo "DT-VM-BEGIN $t"
  /dt/tests/$t --test-threads=1 --show-output $f </dev/null
  echo "DT-VM-END $t rc=$?"
done </dt/tests.list
echo "DT-VM-DONE"
poweroff -f
"#;

/// Starts Debian's Docker engine in a VM of the Docker part and waits (bounded) until it
/// answers; on failure its log goes to the console. The initramfs is the kernel's rootfs, where
/// pivot_root is impossible: `DOCKER_RAMDISK` makes runc move the container's root instead.
/// Storage `vfs` (plain copies: works on any file system, the workload image is one small
/// layer). No iptables in the VM (`--iptables=false`): containers of one network talk without
/// NAT or filter rules, and nothing leaves the VM, which has no network card.
const DOCKER_START: &str = r#"#!/bin/busybox sh
mount -t cgroup2 none /sys/fs/cgroup
mkdir -p /var/lib/docker /etc/docker
mount -t tmpfs docker /var/lib/docker
export DOCKER_RAMDISK=1
dockerd --storage-driver vfs --iptables=false --ip-masq=false --userland-proxy=false \
  >/tmp/dockerd.log 2>&1 </dev/null &
i=0
until docker version >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -ge 120 ]; then
    echo "DT-VM-DOCKER-FAILED the engine did not answer within 120 s; its log:"
    cat /tmp/dockerd.log
    exit 1
  fi
  sleep 1
done
docker load -q -i /dt/workload-image.tar || echo "DT-VM-DOCKER-FAILED docker load"
echo "DT-VM-DOCKER $(docker info --format '{{.ServerVersion}} {{.Driver}} cgroup v{{.CgroupVersion}}') after $i s"
"#;

fn initramfs(
    kernel: &Kernel,
    part: Part,
    busybox: &Path,
    bins: &Binaries,
    engine: Option<&DockerEngine>,
    filter: Option<&str>,
) -> Result<PathBuf> {
    let mut files: Vec<(String, Entry)> = Vec::new();
    for d in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "var",
        "root",
        "lib",
        "lib64",
        "lib/modules",
        "dt",
        "dt/tests",
    ] {
        files.push((d.to_owned(), Entry::Dir));
    }
    // The kernel opens /dev/console for init's stdio before init mounts devtmpfs.
    files.push(("dev/console".into(), Entry::Char(5, 1)));
    files.push(("init".into(), Entry::File(INIT.as_bytes().to_vec(), 0o755)));
    // Users for programs that look themselves up (tcpdump drops privileges to -Z USER).
    files.push(("etc/passwd".into(), Entry::File(b"root:x:0:0:root:/:/bin/sh\n".to_vec(), 0o644)));
    files.push(("etc/group".into(), Entry::File(b"root:x:0:\n".to_vec(), 0o644)));
    files.push(("bin/busybox".into(), Entry::File(fs::read(busybox)?, 0o755)));

    // iproute2's `ip` (busybox's can't do netns or ipvlan) and, where the host has them, perf
    // (root_trace's oracle) and tcpdump (the journey tests' oracle), with their shared libraries.
    let ip = fs::canonicalize("/sbin/ip").context("iproute2's ip is not installed")?;
    host_program(&mut files, &ip, "sbin/ip")?;
    if let Ok(perf) = fs::canonicalize("/usr/bin/perf") {
        host_program(&mut files, &perf, "usr/bin/perf")?;
    }
    if let Ok(tcpdump) = fs::canonicalize("/usr/bin/tcpdump") {
        host_program(&mut files, &tcpdump, "usr/bin/tcpdump")?;
    }
    // iproute2's `bridge` (the overlay mode's static forwarding entries).
    let bridge = fs::canonicalize("/sbin/bridge").context("iproute2's bridge is not installed")?;
    host_program(&mut files, &bridge, "sbin/bridge")?;

    // Modules, dependencies first.
    let available = kernel.module_files();
    let mut order: Vec<String> = Vec::new();
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    fn visit(
        m: &str,
        available: &BTreeMap<String, PathBuf>,
        blobs: &mut BTreeMap<String, Vec<u8>>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if order.iter().any(|o| o == m) || blobs.contains_key(m) {
            return Ok(());
        }
        let Some(path) = available.get(m) else {
            // Built into the kernel (no module file).
            return Ok(());
        };
        let bytes = module_bytes(path)?;
        let deps = module_depends(&bytes);
        blobs.insert(m.to_owned(), bytes);
        for d in deps {
            visit(&d, available, blobs, order)?;
        }
        order.push(m.to_owned());
        Ok(())
    }
    for m in MODULES {
        visit(m, &available, &mut blobs, &mut order)?;
    }
    for m in &order {
        files.push((format!("lib/modules/{m}.ko"), Entry::File(blobs.remove(m).unwrap_or_default(), 0o644)));
    }
    files.push((
        "etc/modules.order".into(),
        Entry::File(format!("{}\n", order.join("\n")).into_bytes(), 0o644),
    ));

    if part == Part::Docker {
        let engine = engine.context("the Docker part needs the Docker engine's packages")?;
        engine.add_to(&mut files)?;
        files.push(("dt/docker-start".into(), Entry::File(DOCKER_START.as_bytes().to_vec(), 0o755)));
        let image = bins.image.as_ref().context("the Docker part needs the workload image")?;
        files.push(("dt/workload-image.tar".into(), Entry::File(fs::read(image)?, 0o644)));
        files.push(("dt/image-tag".into(), Entry::File(VM_IMAGE_TAG.as_bytes().to_vec(), 0o644)));
    }
    files.push(("dt/dockertrace".into(), Entry::File(fs::read(&bins.dockertrace)?, 0o755)));
    let mut list = String::new();
    for (name, filter) in part.tests() {
        let Some((_, exe)) = bins.tests.iter().find(|(n, _)| n == name) else { continue };
        files.push((format!("dt/tests/{name}"), Entry::File(fs::read(exe)?, 0o755)));
        list.push_str(&format!("{name} {filter}\n"));
    }
    files.push(("dt/tests.list".into(), Entry::File(list.into_bytes(), 0o644)));
    files.push(("dt/filter".into(), Entry::File(filter.unwrap_or("").as_bytes().to_vec(), 0o644)));

    let path = vm_dir().join(format!("initramfs-{}.cpio", part.label(&kernel.release)));
    let mut out = std::io::BufWriter::new(fs::File::create(&path)?);
    write_cpio(&mut out, &files)?;
    out.flush()?;
    let mut perms = fs::metadata(&path)?.permissions();
    perms.set_mode(0o644);
    fs::set_permissions(&path, perms)?;
    Ok(path)
}

/// A program of the host at `dest` in the initramfs, with the shared libraries `ldd` finds for
/// it at the same paths as on the host (the cpio writer keeps one copy of each).
fn host_program(files: &mut Vec<(String, Entry)>, exe: &Path, dest: &str) -> Result<()> {
    program_with_libs(files, exe, dest, None)
}

/// A program at `dest` in the initramfs with the shared libraries `ldd` finds for it. With
/// `unpacked` (a tree of unpacked packages), libraries are looked up there first and one found
/// there goes to its path inside the tree (`<tree>/usr/lib/x/libfoo.so` → `usr/lib/x/libfoo.so`);
/// the others at the host's path. A library found nowhere is an error.
fn program_with_libs(
    files: &mut Vec<(String, Entry)>,
    exe: &Path,
    dest: &str,
    unpacked: Option<&Path>,
) -> Result<()> {
    files.push((dest.to_owned(), Entry::File(fs::read(exe)?, 0o755)));
    let mut ldd = Command::new("ldd");
    ldd.arg(exe);
    if let Some(tree) = unpacked {
        ldd.env("LD_LIBRARY_PATH", unpacked_lib_path(tree));
    }
    let out = ldd.output().context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = text.lines().filter(|l| l.contains("not found")).map(str::trim).collect();
    ensure!(missing.is_empty(), "{} needs libraries found nowhere: {}", exe.display(), missing.join(", "));
    for l in text.lines() {
        let lib = l.split("=>").last().and_then(|r| r.split_whitespace().next()).unwrap_or("");
        if lib.starts_with('/') {
            let inside = unpacked.and_then(|t| Path::new(lib).strip_prefix(t).ok());
            let rel = match inside {
                Some(r) => r.to_string_lossy().into_owned(),
                None => lib.trim_start_matches('/').to_owned(),
            };
            if !files.iter().any(|(n, _)| *n == rel) {
                files.push((rel, Entry::File(fs::read(fs::canonicalize(lib)?)?, 0o755)));
            }
        }
    }
    Ok(())
}

/// The library directories of a tree of unpacked packages (bookworm's are not all merged-/usr).
fn unpacked_lib_path(tree: &Path) -> std::ffi::OsString {
    let dirs = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"].map(|d| tree.join(d));
    std::env::join_paths(dirs).expect("library paths hold no ':'")
}

enum Entry {
    Dir,
    /// A character device (major, minor).
    Char(u32, u32),
    File(Vec<u8>, u32),
}

/// Writes a `newc` cpio archive (what the kernel unpacks as initramfs).
fn write_cpio(w: &mut impl std::io::Write, files: &[(String, Entry)]) -> Result<()> {
    fn header(
        w: &mut impl std::io::Write,
        ino: u32,
        mode: u32,
        size: usize,
        rdev: (u32, u32),
        name: &str,
    ) -> Result<()> {
        let fields = [ino, mode, 0, 0, 1, 0, size as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        write!(w, "070701")?;
        for f in fields {
            write!(w, "{f:08x}")?;
        }
        w.write_all(name.as_bytes())?;
        w.write_all(&[0])?;
        let len = 110 + name.len() + 1;
        w.write_all(&[0; 3][..(4 - len % 4) % 4])?;
        Ok(())
    }
    let mut seen = BTreeSet::new();
    let mut ino = files.len() as u32 + 1;
    for (i, (name, e)) in files.iter().enumerate() {
        // The kernel creates no missing parents: every directory comes before what it holds.
        let mut parent = PathBuf::new();
        for c in Path::new(name).parent().into_iter().flat_map(|p| p.components()) {
            parent.push(c);
            let dir = parent.to_string_lossy().into_owned();
            if seen.insert(dir.clone()) {
                ino += 1;
                header(w, ino, 0o040755, 0, (0, 0), &dir)?;
            }
        }
        if !seen.insert(name.clone()) {
            continue;
        }
        match e {
            Entry::Dir => header(w, i as u32 + 1, 0o040755, 0, (0, 0), name)?,
            Entry::Char(major, minor) => header(w, i as u32 + 1, 0o020600, 0, (*major, *minor), name)?,
            Entry::File(data, mode) => {
                header(w, i as u32 + 1, 0o100000 | mode, data.len(), (0, 0), name)?;
                w.write_all(data)?;
                w.write_all(&[0; 3][..(4 - data.len() % 4) % 4])?;
            }
        }
    }
    header(w, 0, 0, 0, (0, 0), "TRAILER!!!")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Serial log

#[derive(Debug, Default)]
struct BinaryRun {
    name: String,
    rc: Option<i32>,
    passed: Vec<String>,
    failed: Vec<String>,
    ignored: Vec<String>,
    /// Skip reasons per test (`skipping: ...` in the output of a passing test).
    skipped: BTreeMap<String, String>,
    /// The binary's output lines.
    lines: Vec<String>,
}

#[derive(Debug)]
struct Outcome {
    runs: Vec<BinaryRun>,
    done: bool,
    timed_out: bool,
    elapsed: Duration,
    log: PathBuf,
    tail: Vec<String>,
    /// The console said `Kernel panic`.
    panicked: bool,
    /// An `int3` oops whose `Code:` line shows another instruction at the trapping address.
    stale_int3: bool,
    /// Why an earlier boot of this VM was retried (`Qemu::boot_retrying_an_emulator_crash`).
    first_boot_crash: Option<&'static str>,
}

/// Whether the console shows an `int3` oops (`int3: 0000 [#1]` on 5.10, `Oops: int3: ...` on
/// newer kernels) whose next `Code:` line marks another byte than `cc` at the trapping address
/// (`<90>`): the instruction had already been patched when the CPU trapped on it.
fn stale_int3(lines: &[String]) -> bool {
    let mut after_int3 = false;
    for l in lines {
        if l.contains("int3: 0000 [#") {
            after_int3 = true;
        } else if after_int3 && l.contains(" Code: ") {
            let at = l.split_once('<').and_then(|(_, r)| r.split_once('>')).map(|(b, _)| b.trim());
            if at.is_some_and(|b| !b.eq_ignore_ascii_case("cc")) {
                return true;
            }
            after_int3 = false;
        }
    }
    false
}

impl Outcome {
    fn parse(lines: &[String], timed_out: bool, elapsed: Duration, log: PathBuf) -> Outcome {
        let mut runs: Vec<BinaryRun> = Vec::new();
        let mut current: Option<BinaryRun> = None;
        let mut done = false;
        let mut section: Option<String> = None;
        for l in lines {
            if let Some(name) = l.strip_prefix("DT-VM-BEGIN ") {
                current = Some(BinaryRun { name: name.trim().to_owned(), ..Default::default() });
                continue;
            }
            if let Some(rest) = l.strip_prefix("DT-VM-END ") {
                if let Some(mut r) = current.take() {
                    r.rc = rest.split("rc=").nth(1).and_then(|v| v.trim().parse().ok());
                    runs.push(r);
                }
                section = None;
                continue;
            }
            if l.starts_with("DT-VM-DONE") {
                done = true;
                continue;
            }
            let Some(r) = current.as_mut() else { continue };
            r.lines.push(l.clone());
            if let Some(rest) = l.strip_prefix("test ") {
                if let Some((name, result)) = rest.rsplit_once(" ... ") {
                    let name = name.to_owned();
                    match result.trim() {
                        "ok" => r.passed.push(name),
                        "FAILED" => r.failed.push(name),
                        s if s.starts_with("ignored") => r.ignored.push(name),
                        _ => {}
                    }
                }
                continue;
            }
            if let Some(name) = l.strip_prefix("---- ").and_then(|s| s.strip_suffix(" stdout ----")) {
                section = Some(name.to_owned());
                continue;
            }
            if let (Some(s), Some(reason)) = (&section, l.strip_prefix("skipping: ")) {
                r.skipped.entry(s.clone()).or_insert_with(|| reason.to_owned());
            }
        }
        if let Some(r) = current.take() {
            runs.push(r);
        }
        let tail = lines.iter().rev().take(40).rev().cloned().collect();
        let panicked = lines.iter().any(|l| l.contains("Kernel panic"));
        let stale_int3 = stale_int3(lines);
        Outcome { runs, done, timed_out, elapsed, log, tail, panicked, stale_int3, first_boot_crash: None }
    }

    /// Why this failed boot is the emulator's, not dockertrace's: the kernel died before the
    /// first test binary started, or a CPU trapped on an `int3` that was already patched away
    /// (on real hardware the kernel's patching protocol rules that out). A panic once a test
    /// has begun is otherwise never retried.
    fn emulator_crash(&self) -> Option<&'static str> {
        if self.passed() || self.timed_out {
            None
        } else if self.stale_int3 {
            Some("a CPU trapped on an int3 the kernel had already patched away (TCG's stale code)")
        } else if self.panicked && self.runs.is_empty() && !self.done {
            Some("the kernel panicked while booting, before any test began")
        } else {
            None
        }
    }

    fn passed(&self) -> bool {
        self.done && !self.timed_out && !self.runs.is_empty() && self.runs.iter().all(|r| r.rc == Some(0))
    }

    fn summary(&self, release: &str) -> String {
        let verdict = if self.passed() {
            "PASS"
        } else if self.timed_out {
            "FAIL (timed out)"
        } else if !self.done {
            "FAIL (the VM stopped before the end)"
        } else {
            "FAIL"
        };
        let per: Vec<String> = self
            .runs
            .iter()
            .map(|r| {
                let skipped = r.passed.iter().filter(|t| r.skipped.contains_key(*t)).count();
                format!(
                    "{} {} passed, {} skipped, {} failed",
                    r.name,
                    r.passed.len() - skipped,
                    skipped,
                    r.failed.len()
                )
            })
            .collect();
        let retried = self.first_boot_crash.map(|why| format!(" (booted twice; the first boot: {why})"));
        let retried = retried.unwrap_or_default();
        format!("{release}: {verdict}{retried} in {:.0} s — {}", self.elapsed.as_secs_f64(), per.join("; "))
    }

    fn show_failures(&self, release: &str) {
        eprintln!("---- {release}: failures (full serial log: {}) ----", self.log.display());
        let mut shown = false;
        for r in &self.runs {
            if r.rc == Some(0) {
                continue;
            }
            shown = true;
            eprintln!("== {} exited with {:?}; failed: {}", r.name, r.rc, r.failed.join(", "));
            // libtest's failure block: from `failures:` to the end of the binary's output.
            let from =
                r.lines.iter().position(|l| l == "failures:").unwrap_or(r.lines.len().saturating_sub(60));
            for l in &r.lines[from..] {
                eprintln!("{l}");
            }
        }
        if !shown || !self.done {
            eprintln!("== last lines of the serial console:");
            for l in &self.tail {
                eprintln!("{l}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_package_names() {
        assert!(kernel_package_matches("6.1", "linux-image-6.1.0-56-amd64"));
        assert!(!kernel_package_matches("6.1", "linux-image-6.1.0-56-cloud-amd64"));
        assert!(!kernel_package_matches("6.1", "linux-image-6.1.0-56-amd64-dbg"));
        assert!(kernel_package_matches("6.12", "linux-image-6.12.117+deb12-amd64"));
        assert!(!kernel_package_matches("6.12", "linux-image-6.12.117+deb12-rt-amd64"));
        let mut v = ["linux-image-6.1.0-9-amd64", "linux-image-6.1.0-56-amd64", "linux-image-6.1.0-10-amd64"];
        v.sort_by_key(|n| version_key(n));
        assert_eq!(v.last(), Some(&"linux-image-6.1.0-56-amd64"));
    }

    #[test]
    fn kernel_5_10_package_names() {
        assert!(kernel_package_matches("5.10", "linux-image-5.10.0-46-amd64"));
        assert!(!kernel_package_matches("5.10", "linux-image-5.10.0-46-rt-amd64"));
        assert!(!kernel_package_matches("5.10", "linux-image-5.10.0-46-amd64-unsigned"));
        assert!(!kernel_package_matches("6.1", "linux-image-5.10.0-46-amd64"));
        let mut v = ["linux-image-5.10.0-9-amd64", "linux-image-5.10.0-46-amd64"];
        v.sort_by_key(|n| version_key(n));
        assert_eq!(v.last(), Some(&"linux-image-5.10.0-46-amd64"));
    }

    #[test]
    fn security_mirror_from_host_sources() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian-security/20250520T000000Z\n\
                      URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(security_uri_in(deb822).as_deref(), Some("http://deb.debian.org/debian-security"));
        let one_line = "deb http://deb.debian.org/debian bookworm main\n\
                        deb [signed-by=/k.gpg] http://mirror.example/debian-security/ bookworm-security main\n";
        assert_eq!(security_uri_in(one_line).as_deref(), Some("http://mirror.example/debian-security"));
        assert_eq!(security_uri_in("# deb http://x/debian-security bookworm-security main\n"), None);
    }

    /// The Docker part skips tests by name: each name must still be a test of its target (a
    /// renamed test would otherwise run in the VMs and blow their time bound).
    #[test]
    fn docker_part_skips_existing_tests() {
        for (target, filter) in DOCKER_VM_TESTS {
            let source = fs::read_to_string(workspace_root().join(format!("dockertrace/tests/{target}.rs")))
                .expect("the Docker part's test target exists");
            let mut words = filter.split_whitespace();
            while let Some(w) = words.next() {
                assert_eq!(w, "--skip", "the filter holds only --skip NAME pairs: {filter}");
                let name = words.next().expect("a name after --skip");
                assert!(source.contains(&format!("fn {name}")), "{target} has no test {name}");
            }
        }
    }

    #[test]
    fn modinfo_depends() {
        let ko = b"\x7fELF....\0license=GPL\0depends=stp,llc\0intree=Y\0";
        assert_eq!(module_depends(ko), ["stp", "llc"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
    }

    #[test]
    fn parses_serial_log() {
        let log = [
            "DT-VM-KERNEL 6.1.0-56-amd64",
            "DT-VM-BEGIN root_trace",
            "running 2 tests",
            "test a ... ok",
            "test b ... FAILED",
            "successes:",
            "---- a stdout ----",
            "skipping: no ipvlan",
            "failures:",
            "---- b stdout ----",
            "thread 'b' panicked at x",
            "DT-VM-END root_trace rc=101",
            "DT-VM-DONE",
        ]
        .map(String::from);
        let o = Outcome::parse(&log, false, Duration::from_secs(1), PathBuf::new());
        assert!(o.done && !o.passed());
        assert_eq!(o.runs[0].passed, ["a"]);
        assert_eq!(o.runs[0].failed, ["b"]);
        assert_eq!(o.runs[0].skipped.get("a").map(String::as_str), Some("no ipvlan"));
        assert_eq!(o.runs[0].rc, Some(101));
        assert_eq!(o.emulator_crash(), None);
    }

    #[test]
    fn retries_only_what_the_emulator_caused() {
        let crash = |lines: &[&str], timed_out| {
            let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            Outcome::parse(&lines, timed_out, Duration::ZERO, PathBuf::new()).emulator_crash()
        };
        let stale = "[    4.88] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI";
        let code = "[    4.88] Code: 90 90 f3 0f 1e fa 41 54 55 53 66 <90> e8 71 ad f0 ff";
        let panic = "[    4.88] Kernel panic - not syncing: Fatal exception in interrupt";
        // A panic in the initcalls; an int3 already patched away, also mid-test and on 5.10.
        assert!(crash(&[stale, code, panic], false).is_some_and(|w| w.contains("int3")));
        assert!(crash(&["[ 1.0] Oops: general protection fault", panic], false)
            .is_some_and(|w| w.contains("booting")));
        let mid = ["DT-VM-BEGIN modes", "running 8 tests", "[ 90.1] int3: 0000 [#1] SMP NOPTI", code, panic];
        assert!(crash(&mid, false).is_some());
        // A real breakpoint, a panic once a test has begun, a timeout, a pass: never retried.
        let real = "[ 90.1] Code: 90 90 <cc> 90";
        assert_eq!(crash(&["DT-VM-BEGIN modes", "[ 90.1] int3: 0000 [#1] SMP", real, panic], false), None);
        assert_eq!(crash(&["DT-VM-BEGIN modes", "running 8 tests", panic], false), None);
        assert_eq!(crash(&["DT-VM-KERNEL 6.12"], true), None);
        let pass = ["DT-VM-BEGIN x", "[ 9.1] int3: 0000 [#1] SMP", code, "DT-VM-END x rc=0", "DT-VM-DONE"];
        assert_eq!(crash(&pass, false), None);
    }
}
