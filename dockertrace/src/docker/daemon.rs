//! A second Docker engine, started by dockertrace for the overlay mode: the Debian `dockerd`
//! in a network namespace of the run, with its own data-root, exec-root, socket and pidfile,
//! all named after the run, and stopped by its pidfile (so `dockertrace cleanup` can stop what
//! a killed run left).
//!
//! - `/run/dockertrace/<run>/`: `docker.sock`, `docker.pid`, `dockerd.log`, the exec-root
//!   `exec/` (its containerd, the overlay sandboxes' namespaces in `exec/netns/`) and
//!   [`SWARM_MARK`] when the run initialised the first engine's swarm;
//! - `/var/lib/dockertrace/<run>/`: the data-root (the workload image, the containers).
use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::engine::Docker;
use crate::sys::owner::STATE_DIR;

/// Where the second engines keep their images and containers, one directory per run.
pub const DATA_DIR: &str = "/var/lib/dockertrace";

/// The file (in the run's state directory) saying that the run initialised the first engine's
/// swarm; its content is `gwbridge` when docker_gwbridge did not exist before.
pub const SWARM_MARK: &str = "swarm-init";

/// Why the second engine could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the overlay mode needs a second Docker engine, but `{0}` is not installed (Debian: apt-get install docker.io util-linux)")]
    Missing(&'static str),
    #[error("cannot prepare {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("cannot start the second Docker engine: {0}")]
    Spawn(std::io::Error),
    #[error("the second Docker engine stopped right after starting: {0}")]
    Exited(String),
    #[error("the second Docker engine did not answer on {socket} within {secs} s (its log: {log})")]
    Timeout { socket: String, secs: u64, log: String },
}

/// The second engine of run `run` (paths only: it may or may not run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine2 {
    pub run: String,
}

/// Whether `prog` is an executable in `$PATH`.
fn in_path(prog: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| d.join(prog).is_file())
}

/// Checks that a second engine can be started at all (`dockerd` and `nsenter` installed).
pub fn available() -> Result<(), DaemonError> {
    for prog in ["dockerd", "nsenter"] {
        if !in_path(prog) {
            return Err(DaemonError::Missing(prog));
        }
    }
    Ok(())
}

impl Engine2 {
    pub fn new(run: &str) -> Engine2 {
        Engine2 { run: run.to_owned() }
    }

    /// `/run/dockertrace/<run>`.
    pub fn state_dir(&self) -> PathBuf {
        Path::new(STATE_DIR).join(&self.run)
    }

    /// `/var/lib/dockertrace/<run>`.
    pub fn data_root(&self) -> PathBuf {
        Path::new(DATA_DIR).join(&self.run)
    }

    pub fn exec_root(&self) -> PathBuf {
        self.state_dir().join("exec")
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir().join("docker.sock")
    }

    pub fn pidfile(&self) -> PathBuf {
        self.state_dir().join("docker.pid")
    }

    pub fn log(&self) -> PathBuf {
        self.state_dir().join("dockerd.log")
    }

    /// The run's state directory, created (for the swarm mark before any engine starts).
    pub fn create_state_dir(&self) -> Result<PathBuf, DaemonError> {
        let dir = self.state_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|source| DaemonError::Dir { path: dir.display().to_string(), source })?;
        Ok(dir)
    }

    /// Starts `dockerd` in the network namespace at `netns` (`nsenter --net=…`, not `ip netns
    /// exec`, which remounts /sys and leaves dockerd without its cgroups), in a process group
    /// of its own (a Ctrl-C on the terminal is dockertrace's to handle), and waits until it
    /// answers on its socket. Returns its pid and a connection.
    pub async fn start(&self, netns: &Path, timeout: Duration) -> Result<(u32, Docker), DaemonError> {
        available()?;
        self.create_state_dir()?;
        for dir in [self.data_root(), self.exec_root()] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| DaemonError::Dir { path: dir.display().to_string(), source })?;
        }
        let log = std::fs::File::create(self.log())
            .map_err(|source| DaemonError::Dir { path: self.log().display().to_string(), source })?;
        let log2 = log.try_clone().map_err(DaemonError::Spawn)?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("dockerd")
            .arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(self.exec_root())
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .arg("--pidfile")
            .arg(self.pidfile())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(DaemonError::Spawn)?;
        // nsenter execs dockerd: the child's pid is the engine's. It is stopped by its pidfile
        // (the teardown, or `dockertrace cleanup` after a killed run); the handle is not kept.
        let pid = child.id();
        drop(child);
        let deadline = Instant::now() + timeout;
        loop {
            if !alive(pid) {
                return Err(DaemonError::Exited(self.log_line()));
            }
            if self.socket().exists() {
                if let Ok(d) = Docker::connect_socket(&self.socket()).await {
                    if d.ping().await {
                        return Ok((pid, d));
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(DaemonError::Timeout {
                    socket: self.socket().display().to_string(),
                    secs: timeout.as_secs(),
                    log: self.log_line(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The engine's most telling log line (the last error, else the last line).
    pub fn log_line(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let line = lines
            .iter()
            .rev()
            .find(|l| l.contains("level=fatal") || l.contains("level=error"))
            .or(lines.last())
            .map_or("(empty)", |l| l.trim());
        line.chars().take(300).collect()
    }

    /// Stops the engine by its pidfile: SIGTERM, up to 20 s for it to shut down, then
    /// SIGKILL, and then its containerd (which a killed dockerd leaves running) the same way.
    /// Only a process whose command line names this engine's files is signalled. Returns
    /// whether an engine was running.
    pub fn stop(&self, known_pid: Option<u32>) -> Result<bool, String> {
        // Before dockerd wrote its pidfile (a Ctrl-C right after the start), it is found by
        // its command line.
        let pid = read_pid(&self.pidfile()).or(known_pid).or_else(|| self.find("dockerd"));
        let mut stopped = false;
        if let Some(pid) = pid.filter(|p| self.owns(*p, "dockerd")) {
            terminate(pid, Duration::from_secs(20))?;
            stopped = true;
        }
        let containerd = self.exec_root().join("containerd").join("containerd.pid");
        if let Some(pid) = read_pid(&containerd).filter(|p| self.owns(*p, "containerd")) {
            terminate(pid, Duration::from_secs(5))?;
        }
        Ok(stopped)
    }

    /// The process running `prog` for this engine, if any.
    fn find(&self, prog: &str) -> Option<u32> {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| self.owns(*pid, prog))
    }

    /// Whether process `pid` runs `prog` for this engine (its command line names our files).
    fn owns(&self, pid: u32, prog: &str) -> bool {
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let ours = cmd.contains(&self.state_dir().display().to_string());
        ours && cmd.split_whitespace().next().is_some_and(|p| p.ends_with(prog))
    }

    /// Removes the engine's directories (after [`stop`](Self::stop)), detaching whatever a
    /// killed engine left mounted in them first (its containers' file systems, the overlay
    /// sandboxes' namespaces).
    pub fn remove_state(&self) -> Result<(), String> {
        for dir in [self.state_dir(), self.data_root()] {
            unmount_under(&dir)?;
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("cannot remove {}: {e}", dir.display()))
                }
                _ => {}
            }
        }
        // The parent of the data roots goes when it is empty (no other run uses it).
        let _ = std::fs::remove_dir(DATA_DIR);
        Ok(())
    }

    /// Whether anything of this engine is on disk.
    pub fn exists(&self) -> bool {
        self.state_dir().exists() || self.data_root().exists()
    }

    /// Whether the run initialised the first engine's swarm: `Some(removes_gwbridge)`.
    pub fn swarm_mark(&self) -> Option<bool> {
        let text = std::fs::read_to_string(self.state_dir().join(SWARM_MARK)).ok()?;
        Some(text.trim() == "gwbridge")
    }

    /// Notes that the run initialised the first engine's swarm (for the cleanup of a killed run).
    pub fn write_swarm_mark(&self, gwbridge: bool) -> Result<(), DaemonError> {
        let path = self.create_state_dir()?.join(SWARM_MARK);
        std::fs::write(&path, if gwbridge { "gwbridge\n" } else { "\n" })
            .map_err(|source| DaemonError::Dir { path: path.display().to_string(), source })
    }

    /// Every run with a second engine's directories on disk (running or left by a killed run).
    pub fn all() -> Vec<Engine2> {
        let mut runs: Vec<String> = [STATE_DIR, DATA_DIR]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        runs.sort();
        runs.dedup();
        runs.iter().map(|r| Engine2::new(r)).collect()
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|p| *p > 0)
}

/// Whether `pid` runs (reaps it first when it is our child: a zombie is not running).
fn alive(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: plain syscall; WNOHANG never blocks, and only our own children are reaped.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGTERM, up to `grace` for `pid` to end, then SIGKILL and up to 5 s more.
fn terminate(pid: u32, grace: Duration) -> Result<(), String> {
    for (signal, wait) in [(libc::SIGTERM, grace), (libc::SIGKILL, Duration::from_secs(5))] {
        // SAFETY: plain syscall on a pid checked to be this engine's.
        unsafe { libc::kill(pid as i32, signal) };
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if !alive(pid) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Err(format!("process {pid} did not end after SIGKILL"))
}

/// Detaches every mount point below `dir` (deepest first), from /proc/self/mountinfo.
fn unmount_under(dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p.starts_with(&prefix) || *p == dir.display().to_string())
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let c = std::ffi::CString::new(p.clone()).map_err(|e| e.to_string())?;
        // SAFETY: a valid NUL-terminated path; MNT_DETACH never blocks.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::ENOENT) {
                return Err(format!("cannot unmount {p}: {e}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_files_are_named_after_the_run() {
        let e = Engine2::new("0a1b2c3d");
        assert_eq!(e.socket(), Path::new("/run/dockertrace/0a1b2c3d/docker.sock"));
        assert_eq!(e.pidfile(), Path::new("/run/dockertrace/0a1b2c3d/docker.pid"));
        assert_eq!(e.exec_root(), Path::new("/run/dockertrace/0a1b2c3d/exec"));
        assert_eq!(e.data_root(), Path::new("/var/lib/dockertrace/0a1b2c3d"));
        // A unix socket path must fit sun_path (108 bytes), also containerd's in the exec-root.
        assert!(e.exec_root().join("containerd/containerd.sock.ttrpc").as_os_str().len() < 100);
    }

    #[test]
    fn a_process_is_alive_until_reaped_and_others_are_never_signalled() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(alive(pid));
        assert!(!Engine2::new("no-such-run").owns(pid, "sleep"), "not this engine's process");
        terminate(pid, Duration::from_secs(2)).unwrap();
        assert!(!alive(pid));
        // `alive` reaped it already: waiting finds no child (or its status), never blocks.
        let _ = child.try_wait();
        assert_eq!(Engine2::new("no-such-run").stop(Some(std::process::id())), Ok(false));
    }
}
