//! Network namespaces, low level: inode numbers, running code inside a namespace, device
//! lookup, `ip` (iproute2), and [`Namespace`], a named namespace that either removes itself or
//! leaves that to whoever registered it (the run's teardown).
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    process::Command,
};

use dockertrace_common::DevKey;

/// Errors about network namespaces and devices.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("cannot enter network namespace {path}: {source} (are you root?)")]
    Enter { path: String, source: std::io::Error },
    #[error("no device named `{name}` in network namespace {netns}")]
    NoDevice { name: String, netns: String },
    #[error("a thread running in network namespace {0} panicked")]
    Panicked(String),
    #[error("cannot set net.{key} in {netns}: {source}")]
    Sysctl { key: String, netns: String, source: std::io::Error },
}

/// Inode number of the network namespace behind `path` (`/proc/PID/ns/net`,
/// `/var/run/netns/NAME`, ...).
pub fn inode_of(path: &Path) -> Result<u32, NetnsError> {
    let meta = std::fs::metadata(path)
        .map_err(|source| NetnsError::Open { path: path.display().to_string(), source })?;
    // Namespace inodes are 32-bit (proc_inum allocates from an IDA below 2^32).
    Ok(meta.ino() as u32)
}

/// Inode number of this process's network namespace.
pub fn current_inode() -> Result<u32, NetnsError> {
    inode_of(Path::new("/proc/self/ns/net"))
}

/// Runs `f` on a new thread that has joined the network namespace at `path`.
/// `setns(CLONE_NEWNET)` changes only the calling thread, so the rest of the process is untouched.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| NetnsError::Open { path: shown.clone(), source })?;
    let handle = std::thread::spawn(move || {
        // SAFETY: plain syscall on an fd we own.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f())
    });
    match handle.join() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(NetnsError::Enter { path: shown, source }),
        Err(_) => Err(NetnsError::Panicked(shown)),
    }
}

/// The ifindex of device `name` in the namespace at `path` (None: the current one).
pub fn ifindex(path: Option<&Path>, name: &str) -> Result<u32, NetnsError> {
    let lookup = {
        let name = name.to_owned();
        move || {
            let c = std::ffi::CString::new(name).ok()?;
            // SAFETY: valid NUL-terminated string.
            let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
            (idx != 0).then_some(idx)
        }
    };
    let found = match path {
        Some(p) => run_in(p, lookup)?,
        None => lookup(),
    };
    found.ok_or_else(|| NetnsError::NoDevice {
        name: name.to_owned(),
        netns: path.map_or_else(|| "of dockertrace".to_owned(), |p| p.display().to_string()),
    })
}

/// Where named namespaces live (`ip netns add NAME`).
pub const NETNS_DIR: &str = "/var/run/netns";

/// Runs `ip ARGS` (iproute2), with a one-line error naming the command.
pub fn ip(args: &[&str]) -> Result<(), IpError> {
    let out = Command::new("ip").args(args).output().map_err(|e| IpError {
        cmd: args.join(" "),
        msg: format!("cannot run `ip` (install iproute2): {e}"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(IpError { cmd: args.join(" "), msg: String::from_utf8_lossy(&out.stderr).trim().to_owned() })
}

/// A failed `ip` command.
#[derive(Debug, thiserror::Error)]
#[error("`ip {cmd}` failed: {msg}")]
pub struct IpError {
    pub cmd: String,
    pub msg: String,
}

/// Deletes a named namespace with everything in it; a missing one is not an error.
pub fn delete_namespace(name: &str) -> Result<(), IpError> {
    match ip(&["netns", "del", name]) {
        Err(e) if e.msg.contains("No such file") => Ok(()),
        r => r,
    }
}

/// Who removes a [`Namespace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The value itself, when dropped (tests, short-lived probes).
    OnDrop,
    /// Whoever registered it before creating it (a run's teardown, which also removes it on
    /// Ctrl-C and errors): dropping the value leaves the namespace alone.
    Registered,
}

/// A named network namespace (`ip netns add`).
#[derive(Debug)]
pub struct Namespace {
    name: String,
    path: PathBuf,
    removal: Removal,
}

impl Namespace {
    /// Creates `/var/run/netns/NAME` with its loopback up; deleted with everything in it when
    /// dropped.
    pub fn create(name: &str) -> Result<Namespace, IpError> {
        Self::create_with(name, Removal::OnDrop)
    }

    /// Creates the namespace; `removal` says who deletes it. With [`Removal::Registered`] the
    /// caller must have registered it for removal first (a failure half-way leaves it to them).
    pub fn create_with(name: &str, removal: Removal) -> Result<Namespace, IpError> {
        ip(&["netns", "add", name])?;
        let ns = Namespace { name: name.to_owned(), path: Path::new(NETNS_DIR).join(name), removal };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    pub fn removal(&self) -> Removal {
        self.removal
    }

    /// Sets a `net.*` sysctl inside this namespace (`key` like `ipv6/conf/all/disable_ipv6`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        let file = Path::new("/proc/sys/net").join(key);
        let value = value.to_owned();
        // /proc/sys/net shows the namespace of the task that opens it.
        run_in(&self.path, move || std::fs::write(&file, value))?.map_err(|source| NetnsError::Sysctl {
            key: key.replace('/', "."),
            netns: self.name.clone(),
            source,
        })
    }

    pub fn inode(&self) -> Result<u32, NetnsError> {
        inode_of(&self.path)
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), IpError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// The ifindex of `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> Result<u32, NetnsError> {
        ifindex(Some(&self.path), dev)
    }

    /// Device `dev` of this namespace as an in-kernel filter key.
    pub fn dev(&self, dev: &str) -> Result<DevKey, NetnsError> {
        Ok(DevKey { netns: self.inode()?, ifindex: self.ifindex(dev)? })
    }

    /// Runs `PROG ARGS` inside the namespace (`ip netns exec`); Err: one line naming it.
    pub fn exec(&self, prog: &str, args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, prog])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run `ip netns exec`: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("`{prog} {}` failed: {}", args.join(" "), err.lines().next().unwrap_or("").trim()))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if self.removal != Removal::OnDrop {
            return;
        }
        // Deleting the namespace destroys its devices (and the veth peers elsewhere).
        if let Err(e) = delete_namespace(&self.name) {
            log::warn!("cleanup: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_has_an_inode_and_loopback() {
        let ino = current_inode().expect("own netns");
        assert!(ino > 0);
        assert_eq!(inode_of(Path::new("/proc/self/ns/net")).unwrap(), ino);
        assert_eq!(ifindex(None, "lo").expect("lo exists"), 1);
    }

    #[test]
    fn missing_things_are_clear_errors() {
        let err = inode_of(Path::new("/nonexistent/ns")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ns"), "{err}");
        let err = ifindex(None, "no-such-dev0").unwrap_err().to_string();
        assert!(err.contains("no-such-dev0"), "{err}");
    }

    /// Deletes a test namespace when dropped, also when an assertion failed first.
    struct Remove(String);

    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = delete_namespace(&self.0);
        }
    }

    #[test]
    fn a_namespace_removes_itself_unless_registered_elsewhere() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: creating network namespaces needs root");
            return;
        }
        let own = format!("dt-u{}-own", std::process::id());
        let _guard = Remove(own.clone());
        let ns = Namespace::create(&own).expect("create");
        let path = ns.path();
        assert!(path.exists() && ns.removal() == Removal::OnDrop);
        assert_eq!(ns.ifindex("lo").unwrap(), 1);
        drop(ns);
        assert!(!path.exists(), "{own} outlived its value");

        let kept = format!("dt-u{}-kept", std::process::id());
        let _guard = Remove(kept.clone());
        let ns = Namespace::create_with(&kept, Removal::Registered).expect("create");
        let path = ns.path();
        drop(ns);
        assert!(path.exists(), "a registered namespace is left to its owner");
        delete_namespace(&kept).unwrap();
        assert!(!path.exists());
        delete_namespace(&kept).expect("deleting a missing namespace is fine");
    }
}
