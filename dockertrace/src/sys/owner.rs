//! Who owns what a run creates: the dockertrace process, by pid *and* start time (so a reused
//! pid is not mistaken for the run). Runs record their owner with everything they leave in the
//! system (Docker labels, link aliases, a state file per netns run), so that a later run can
//! tell what a dead run left from what a live one is using.
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// Where the netns runtime keeps one small file per run: `<run>.pid`, holding the owner.
pub const STATE_DIR: &str = "/run/dockertrace";

/// A process, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub pid: u32,
    /// `starttime` of `/proc/PID/stat`: clock ticks after boot.
    pub start: u64,
}

/// Whether an owner still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// No process with that pid, or one that started at another time (the pid was reused).
    Gone,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        static OWN: OnceLock<Owner> = OnceLock::new();
        *OWN.get_or_init(|| {
            let pid = std::process::id();
            // Our own stat file is always readable; 0 only if /proc is missing.
            Owner { pid, start: start_time(pid).ok().flatten().unwrap_or(0) }
        })
    }

    /// Whether the process still runs. When it cannot be told (an unreadable /proc entry,
    /// an owner recorded without start time), the answer is `Alive`: nothing is ever removed
    /// on a guess.
    pub fn liveness(&self) -> Liveness {
        match start_time(self.pid) {
            Ok(None) => Liveness::Gone,
            Ok(Some(start)) if self.start != 0 && start != self.start => Liveness::Gone,
            _ => Liveness::Alive,
        }
    }

    /// `pid=PID start=TICKS`, the form used in link aliases and state files.
    pub fn tag(&self) -> String {
        format!("pid={} start={}", self.pid, self.start)
    }

    /// Reads the `pid=` and `start=` fields of `text` (other fields are ignored).
    pub fn from_tag(text: &str) -> Option<Owner> {
        let field = |k: &str| text.split_whitespace().find_map(|w| w.strip_prefix(k)?.strip_prefix('='));
        Some(Owner { pid: field("pid")?.parse().ok()?, start: field("start")?.parse().ok()? })
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)
    }
}

/// The start time of process `pid` (`None`: no such process).
pub fn start_time(pid: u32) -> std::io::Result<Option<u64>> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => Ok(parse_start_time(&stat)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        // ESRCH: the process exited while we read.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Field 22 (`starttime`) of a `/proc/PID/stat` line; the command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: starttime is the 20th of them.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The state file of netns run `run`.
pub fn state_file(run: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{run}.pid"))
}

/// Records `owner` as the owner of run `run`; returns the file's path.
pub fn write_state(run: &str, owner: Owner) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(STATE_DIR)?;
    let path = state_file(run);
    std::fs::write(&path, format!("{}\n", owner.tag()))?;
    Ok(path)
}

/// Every recorded run: its id, owner and state file. Unreadable or foreign files are skipped.
pub fn states() -> Vec<(String, Owner, PathBuf)> {
    let Ok(dir) = std::fs::read_dir(STATE_DIR) else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let path = e.path();
            let run = path.file_name()?.to_str()?.strip_suffix(".pid")?.to_owned();
            let owner = Owner::from_tag(&std::fs::read_to_string(&path).ok()?)?;
            Some((run, owner, path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_names() {
        let stat = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("1 (x) S 1"), None);
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = Owner::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start > 0);
        assert_eq!(me.liveness(), Liveness::Alive);
        assert_eq!(Owner { start: me.start + 1, ..me }.liveness(), Liveness::Gone, "a reused pid");
        // Unknown start time: never taken for dead while the pid runs.
        assert_eq!(Owner { start: 0, ..me }.liveness(), Liveness::Alive);
    }

    #[test]
    fn an_exited_process_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = start_time(pid).unwrap().unwrap_or(1);
        child.wait().unwrap();
        // Reaped: the pid is free (or, improbably, taken by a process that started later).
        assert_eq!(Owner { pid, start }.liveness(), Liveness::Gone);
    }

    #[test]
    fn tags_round_trip() {
        let o = Owner { pid: 42, start: 7 };
        assert_eq!(o.tag(), "pid=42 start=7");
        assert_eq!(Owner::from_tag(&format!("dockertrace run=ab12 {}", o.tag())), Some(o));
        assert_eq!(Owner::from_tag("dockertrace"), None);
        assert_eq!(Owner::from_tag("pid=x start=1"), None);
        assert_eq!(o.to_string(), "pid 42");
    }
}
