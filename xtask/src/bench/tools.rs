//! The other tracers the bench runs around an untraced workload: `perf record` and bpftrace,
//! each on the tracer's CPU, reaped with `wait4` for their CPU time and peak memory.
use std::{
    fs,
    io::Read as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// bpftrace's program: the nearest peer of `--aggregate` (counts per probe and kernel stack,
/// in the kernel; a stack walk on every event).
pub const BPFTRACE_PROGRAM: &str = "tracepoint:net:* { @[probe, kstack] = count(); }";

/// The CPUs this process may run on (sched_getaffinity), in order.
pub fn usable_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is the empty set; the kernel fills at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    // SAFETY: reading bits below CPU_SETSIZE of an initialized set.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

/// Runs `cmd` on `cpu` only (the affinity is set in the child before exec).
pub fn pin(cmd: &mut Command, cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    // SAFETY: an all-zero cpu_set_t is the empty set; cpu < CPU_SETSIZE (from usable_cpus).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the closure runs between fork and exec and makes one async-signal-safe system
    // call on a set prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Whether `program --version` runs.
pub fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What an external tracer captured and cost.
pub struct ToolResult {
    pub events: u64,
    pub lost: u64,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
}

/// A tracer child reaped by pid (for its rusage), not through `Child`.
struct Reaped {
    status: i32,
    cpu_s: f64,
    peak_rss_kib: u64,
}

/// Spawns `cmd` (stdout and stderr to files) and keeps only its pid.
fn spawn(mut cmd: Command, out: &Path, err: &Path, what: &str) -> Result<libc::pid_t> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(out)?)
        .stderr(fs::File::create(err)?)
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let pid = child.id() as libc::pid_t;
    // Reaped with wait4 in `interrupt`, for its rusage.
    std::mem::forget(child);
    Ok(pid)
}

/// SIGINT (how both tools stop and write their results), then reap.
fn interrupt(pid: libc::pid_t) -> Reaped {
    // SAFETY: signalling and reaping our own child by its pid.
    let (status, ru) = unsafe {
        libc::kill(pid, libc::SIGINT);
        let mut status = 0;
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut ru);
        (status, ru)
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Reaped { status, cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime), peak_rss_kib: ru.ru_maxrss as u64 }
}

/// Whether `pid` (our child) has exited; reaps it if so.
fn exited(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: a non-blocking wait on our own child.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    fs::File::open(path).and_then(|mut f| f.read_to_string(&mut s)).ok();
    s
}

/// A `perf record` of the whole machine, as the study ran it.
pub struct Perf {
    pid: libc::pid_t,
    err: PathBuf,
    data: PathBuf,
    started: Instant,
}

impl Perf {
    pub fn start(data: &Path, cpu: Option<usize>) -> Result<Perf> {
        let err = data.with_extension("stderr");
        let mut cmd = Command::new("perf");
        cmd.args(["record", "-a", "-e", "net:*", "--call-graph", "fp", "-o"]).arg(data);
        pin(&mut cmd, cpu);
        let pid = spawn(cmd, Path::new("/dev/null"), &err, "perf")?;
        let perf = Perf { pid, err, data: data.to_path_buf(), started: Instant::now() };
        // perf writes its header once its events are open; give it that long (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && fs::metadata(data).map(|m| m.len() == 0).unwrap_or(true) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(perf)
    }

    /// Stops perf and reads what it wrote.
    pub fn stop(self) -> Result<ToolResult> {
        let wall_s = self.started.elapsed().as_secs_f64();
        let r = interrupt(self.pid);
        let err = read(&self.err);
        let _ = fs::remove_file(&self.err);
        let _ = fs::remove_file(&self.data);
        let _ = fs::remove_file(self.data.with_extension("data.old"));
        let Some((events, lost)) = parse_perf_stderr(&err) else {
            bail!("perf record did not report its samples (status {}): {}", r.status, err.trim());
        };
        Ok(ToolResult { events, lost, wall_s, cpu_s: r.cpu_s, peak_rss_kib: r.peak_rss_kib })
    }
}

/// `perf record`'s closing lines: "… wrote 38.9 MB f (165989 samples) ]" and, when it lost
/// some, "Processed 182080 samples and lost 8.84%!". Returns (samples written, samples lost).
pub fn parse_perf_stderr(err: &str) -> Option<(u64, u64)> {
    // perf leaves the "(N samples)" out when there were none.
    let samples = err.lines().find(|l| l.contains("perf record: Captured and wrote")).map(|l| {
        l.rsplit_once('(')
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    })?;
    let processed = err.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("Processed ")?;
        let (n, tail) = rest.split_once(' ')?;
        tail.starts_with("samples and lost").then(|| n.parse::<u64>().ok()).flatten()
    });
    Some((samples, processed.map_or(0, |p| p.saturating_sub(samples))))
}

/// `bpftrace -e` [`BPFTRACE_PROGRAM`] around an untraced run.
pub struct Bpftrace {
    pid: libc::pid_t,
    out: PathBuf,
    err: PathBuf,
    started: Instant,
}

impl Bpftrace {
    pub fn start(out: &Path, cpu: Option<usize>) -> Result<Bpftrace> {
        let err = out.with_extension("stderr");
        let mut cmd = Command::new("bpftrace");
        cmd.args(["-e", BPFTRACE_PROGRAM]);
        pin(&mut cmd, cpu);
        let pid = spawn(cmd, out, &err, "bpftrace")?;
        let bt = Bpftrace { pid, out: out.to_path_buf(), err, started: Instant::now() };
        // "Attaching N probes..." comes before the attach: wait for it, then give the attach
        // that long (bounded; a bpftrace that exits fails the run with its own words).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !read(out).contains("Attaching ") {
            let gone = exited(pid);
            if gone || Instant::now() > deadline {
                if !gone {
                    interrupt(pid);
                }
                let e = read(&bt.err);
                bt.cleanup();
                bail!("bpftrace did not attach: {}", e.trim());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        Ok(bt)
    }

    fn cleanup(&self) {
        let _ = fs::remove_file(&self.out);
        let _ = fs::remove_file(&self.err);
    }

    /// Stops bpftrace; it prints its map on the way out.
    pub fn stop(self) -> Result<ToolResult> {
        let wall_s = self.started.elapsed().as_secs_f64();
        let r = interrupt(self.pid);
        let (out, err) = (read(&self.out), read(&self.err));
        self.cleanup();
        let events = parse_bpftrace_counts(&out);
        if events == 0 && !out.contains("Attaching ") {
            bail!("bpftrace failed (status {}): {}", r.status, err.trim());
        }
        Ok(ToolResult {
            events,
            lost: parse_bpftrace_lost(&err),
            wall_s,
            cpu_s: r.cpu_s,
            peak_rss_kib: r.peak_rss_kib,
        })
    }
}

/// The sum of a printed bpftrace map's counts: every entry ends with `]: N`.
pub fn parse_bpftrace_counts(out: &str) -> u64 {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("]: ").or_else(|| l.rsplit_once("]: ").map(|(_, n)| n)))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum()
}

/// bpftrace's "Lost N events" warnings, summed.
pub fn parse_bpftrace_lost(err: &str) -> u64 {
    err.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("Lost ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_closing_lines_give_samples_and_losses() {
        let lossy = "[ perf record: Woken up 19412 times to write data ]\nWarning:\n\
                     Processed 182080 samples and lost 8.84%!\n\n\
                     [ perf record: Captured and wrote 38.901 MB /tmp/p.data (165989 samples) ]\n";
        assert_eq!(parse_perf_stderr(lossy), Some((165989, 16091)));
        let clean = "[ perf record: Woken up 1 times to write data ]\n\
                     [ perf record: Captured and wrote 0.024 MB /tmp/p.data (12 samples) ]\n";
        assert_eq!(parse_perf_stderr(clean), Some((12, 0)));
        let none = "[ perf record: Captured and wrote 0.024 MB /tmp/p.data ]\n";
        assert_eq!(parse_perf_stderr(none), Some((0, 0)));
        assert_eq!(parse_perf_stderr("perf: interrupted"), None);
    }

    #[test]
    fn bpftrace_maps_sum_their_counts() {
        let out = "Attaching 16 probes...\n\n\n@[tracepoint:net:netif_rx_entry, \n    __netif_rx+95\n    \
                   loopback_xmit+150\n]: 100\n@[tracepoint:net:net_dev_queue, \n    __dev_queue_xmit+1294\n\
                   ]: 23\n@[tracepoint:net:napi_gro_receive_entry, ]: 4\n";
        assert_eq!(parse_bpftrace_counts(out), 127);
        assert_eq!(parse_bpftrace_counts("Attaching 16 probes...\n"), 0);
        assert_eq!(parse_bpftrace_lost("Lost 12 events\nERROR: x\nLost 3 events\n"), 15);
    }

    #[test]
    fn this_process_has_cpus() {
        assert!(!usable_cpus().is_empty());
    }
}
