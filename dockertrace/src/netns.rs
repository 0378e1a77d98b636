//! Network-namespace helpers: inode numbers, running code inside a namespace, device lookup.
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::Path,
};

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
}

/// Runs `ip ARGS` (iproute2), with a one-line error naming the command.
pub fn ip(args: &[&str]) -> Result<(), IpError> {
    let out = std::process::Command::new("ip").args(args).output().map_err(|e| IpError {
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

/// A named network namespace (`ip netns add`), deleted with everything in it on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates `/var/run/netns/NAME` with its loopback up.
    pub fn create(name: &str) -> Result<Namespace, IpError> {
        ip(&["netns", "add", name])?;
        let ns = Namespace { name: name.to_owned() };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets a `net.*` sysctl inside this namespace (`key` like `ipv6/conf/all/disable_ipv6`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        let file = Path::new("/proc/sys/net").join(key);
        let value = value.to_owned();
        // /proc/sys/net shows the namespace of the task that opens it.
        run_in(&self.path(), move || std::fs::write(&file, value))?
            .map_err(|source| NetnsError::Enter { path: format!("{} (sysctl {key})", self.name), source })
    }

    pub fn path(&self) -> std::path::PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    pub fn inode(&self) -> Result<u32, NetnsError> {
        inode_of(&self.path())
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), IpError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// The ifindex of `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> Result<u32, NetnsError> {
        ifindex(Some(&self.path()), dev)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace destroys its devices (and the veth peers elsewhere).
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            log::warn!("cleanup: {e}");
        }
    }
}
