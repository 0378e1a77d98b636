//! CPU pinning: `--workload-cpus` and `--tracer-cpus`.
//!
//! A CPU list (`0`, `0-3`, `0,2,5-7`) is checked against the CPUs this process may run on when
//! the command line is parsed, so a CPU the machine lacks is a usage error before anything is
//! deployed. The tracer's own threads are pinned with `sched_setaffinity` on every thread of the
//! process (before the async runtime starts, so later threads inherit it); the workload's
//! processes get their list in the child before `exec` (or Docker's `cpuset_cpus`), and when
//! only the tracer is pinned they get back the affinity dockertrace started with, so pinning the
//! tracer never pins the workload to the tracer's CPUs by inheritance.
use std::{collections::BTreeSet, fmt, str::FromStr, sync::OnceLock};

/// The highest CPU number a list may name (the size of the kernel's `cpu_set_t`).
const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

/// A non-empty set of CPU numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CpuList(BTreeSet<usize>);

impl CpuList {
    /// Parses `0`, `0-3`, `0,2,5-7` (no checks against the machine).
    pub fn parse(s: &str) -> Result<CpuList, String> {
        let mut set = BTreeSet::new();
        for part in s.split(',').map(str::trim) {
            let num = |t: &str| {
                t.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("`{t}` is not a CPU number (lists look like 0,2-3)"))
            };
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(part)?, num(part)?),
            };
            if lo > hi {
                return Err(format!("`{part}` is an empty range"));
            }
            if hi >= MAX_CPUS {
                return Err(format!("CPU {hi} is beyond the largest CPU number ({})", MAX_CPUS - 1));
            }
            set.extend(lo..=hi);
        }
        Ok(CpuList(set))
    }

    pub fn cpus(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    pub fn contains(&self, cpu: usize) -> bool {
        self.0.contains(&cpu)
    }

    /// The CPUs in `self` that `other` lacks.
    pub fn missing_from(&self, other: &CpuList) -> Vec<usize> {
        self.0.difference(&other.0).copied().collect()
    }

    fn to_cpu_set(&self) -> libc::cpu_set_t {
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for c in self.cpus() {
            // SAFETY: c < CPU_SETSIZE (checked when parsed or read from the kernel).
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        set
    }

    fn from_cpu_set(set: &libc::cpu_set_t) -> CpuList {
        // SAFETY: reading bits below CPU_SETSIZE of an initialized set.
        CpuList((0..MAX_CPUS).filter(|&c| unsafe { libc::CPU_ISSET(c, set) }).collect())
    }
}

/// The compact form: `0-3,6`.
impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<usize> = self.cpus().collect();
        let mut i = 0;
        let mut first = true;
        while i < v.len() {
            let mut j = i;
            while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
                j += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if j == i {
                write!(f, "{}", v[i])?;
            } else {
                write!(f, "{}-{}", v[i], v[j])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

impl FromStr for CpuList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CpuList::parse(s)
    }
}

/// The clap value parser of `--workload-cpus` and `--tracer-cpus`: a list whose CPUs this
/// process may all run on.
pub fn parse_usable(s: &str) -> Result<CpuList, String> {
    let list = CpuList::parse(s)?;
    let usable = usable().map_err(|e| format!("cannot read this process's CPUs: {e}"))?;
    check_usable(&list, &usable)?;
    Ok(list)
}

fn check_usable(list: &CpuList, usable: &CpuList) -> Result<(), String> {
    let missing = list.missing_from(usable);
    if missing.is_empty() {
        return Ok(());
    }
    let missing = CpuList(missing.into_iter().collect());
    let (s, verb) = if missing.0.len() == 1 { ("", "is") } else { ("s", "are") };
    Err(format!("CPU{s} {missing} {verb} not available here (usable CPUs: {usable})"))
}

/// The CPUs dockertrace started with (read once, before any pinning).
static ORIGINAL: OnceLock<CpuList> = OnceLock::new();

fn affinity(tid: libc::pid_t) -> std::io::Result<CpuList> {
    // SAFETY: an all-zero cpu_set_t is valid; the kernel fills at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`.
    if unsafe { libc::sched_getaffinity(tid, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(CpuList::from_cpu_set(&set))
}

/// The CPUs this process may run on, as it started (before [`pin_process`]).
pub fn usable() -> std::io::Result<CpuList> {
    if let Some(o) = ORIGINAL.get() {
        return Ok(o.clone());
    }
    let now = affinity(0)?;
    Ok(ORIGINAL.get_or_init(|| now).clone())
}

fn set_affinity(tid: libc::pid_t, set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: the pointer and size describe an initialized cpu_set_t.
    if unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pins every thread of this process to `cpus` (threads created later inherit it).
pub fn pin_process(cpus: &CpuList) -> anyhow::Result<()> {
    usable()?;
    let set = cpus.to_cpu_set();
    let tasks = std::fs::read_dir("/proc/self/task")?;
    for t in tasks {
        let Some(tid) = t?.file_name().to_str().and_then(|s| s.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        match set_affinity(tid, &set) {
            Ok(()) => {}
            // A thread that ended meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => anyhow::bail!("cannot pin dockertrace to CPUs {cpus}: {e}"),
        }
    }
    Ok(())
}

/// The affinity a workload process must get before `exec`: `workload` when given, else the one
/// dockertrace started with if dockertrace has pinned itself since (None: inherit).
pub fn child_affinity(workload: Option<&CpuList>) -> Option<ChildAffinity> {
    let list = match workload {
        Some(w) => w.clone(),
        None => {
            let original = ORIGINAL.get()?;
            if affinity(0).ok().as_ref() == Some(original) {
                return None;
            }
            original.clone()
        }
    };
    Some(ChildAffinity(list.to_cpu_set()))
}

/// A CPU set prepared before `fork`, applied between `fork` and `exec`.
#[derive(Clone, Copy)]
pub struct ChildAffinity(libc::cpu_set_t);

impl ChildAffinity {
    /// Sets the calling thread's affinity; async-signal-safe (one system call, no allocation).
    pub fn apply(&self) -> std::io::Result<()> {
        set_affinity(0, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_print_compactly() {
        let l = CpuList::parse("0,2-4, 7").unwrap();
        assert_eq!(l.cpus().collect::<Vec<_>>(), [0, 2, 3, 4, 7]);
        assert_eq!(l.to_string(), "0,2-4,7");
        assert_eq!(CpuList::parse("1").unwrap().to_string(), "1");
        assert_eq!(CpuList::parse("3-3,0-1").unwrap().to_string(), "0-1,3");
        for bad in ["", "a", "1-", "3-1", "-2", "1,,2", "99999"] {
            assert!(CpuList::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cpu_the_machine_lacks_is_named_with_the_usable_ones() {
        let usable = CpuList::parse("0-1").unwrap();
        assert!(check_usable(&CpuList::parse("1").unwrap(), &usable).is_ok());
        let e = check_usable(&CpuList::parse("1,5").unwrap(), &usable).unwrap_err();
        assert_eq!(e, "CPU 5 is not available here (usable CPUs: 0-1)");
        let e = check_usable(&CpuList::parse("4-6").unwrap(), &usable).unwrap_err();
        assert_eq!(e, "CPUs 4-6 are not available here (usable CPUs: 0-1)");
    }

    #[test]
    fn cpu_sets_round_trip() {
        let l = CpuList::parse("0,3,64-65").unwrap();
        assert_eq!(CpuList::from_cpu_set(&l.to_cpu_set()), l);
        assert!(usable().unwrap().cpus().next().is_some());
    }
}
