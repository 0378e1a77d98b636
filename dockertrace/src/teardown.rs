//! Everything a run creates is registered here *before* it is created, and removed in reverse
//! order on every way out: normal end, error, Ctrl-C/SIGTERM (explicit async teardown) and
//! panics (the `Drop` guard, which tears down on a thread of its own).
use std::path::PathBuf;

use crate::{
    docker::{daemon::Engine2, Docker},
    sys::{
        links,
        netns::{self, IpError, Namespace, Removal},
    },
};

/// A thing a run created.
#[derive(Debug)]
pub enum Resource {
    /// A Docker container, by name (known before it exists) or id.
    Container(String),
    /// A Docker network, by name or id.
    Network(String),
    /// A container of the engine listening on `socket` (the overlay mode's second engine).
    ContainerOn { socket: PathBuf, name: String },
    /// A swarm membership: `docker swarm leave --force` on the first engine (`None`) or on the
    /// engine listening on this socket.
    SwarmLeave(Option<PathBuf>),
    /// A node of the first engine's swarm (a second engine that joined a swarm the run did not
    /// create): `docker node rm --force`.
    SwarmNode(String),
    /// A second Docker engine, stopped by its pidfile.
    Engine(Engine2),
    /// The directories of a second engine (and of the run's swarm mark): removed.
    EngineFiles(Engine2),
    /// A link in the host namespace (veth peers go with it).
    Link(String),
    /// A named network namespace (`ip netns add`): its links, routes, sysctls and iptables
    /// rules go with it.
    Namespace(String),
    /// A process we started.
    Child(std::process::Child),
    /// A temporary file.
    File(PathBuf),
    /// An iptables rule in the host namespace, as `chain` and the rule's match and target
    /// (`--inject forward-drop` with Docker): deleted with `iptables -D chain rule...`.
    IptablesRule { chain: String, rule: Vec<String> },
}

impl Resource {
    fn describe(&self) -> String {
        match self {
            Resource::Container(c) => format!("container {c}"),
            Resource::Network(n) => format!("network {n}"),
            Resource::ContainerOn { socket, name } => format!("container {name} of {}", socket.display()),
            Resource::SwarmLeave(None) => "the first engine's swarm membership".into(),
            Resource::SwarmLeave(Some(s)) => format!("the swarm membership of {}", s.display()),
            Resource::SwarmNode(n) => format!("swarm node {n}"),
            Resource::Engine(e) => format!("the second Docker engine of run {}", e.run),
            Resource::EngineFiles(e) => {
                format!("{} and {}", e.state_dir().display(), e.data_root().display())
            }
            Resource::Link(l) => format!("link {l}"),
            Resource::Namespace(n) => format!("network namespace {n}"),
            Resource::Child(c) => format!("process {}", c.id()),
            Resource::File(f) => format!("file {}", f.display()),
            Resource::IptablesRule { chain, rule } => format!("iptables rule {chain} {}", rule.join(" ")),
        }
    }
}

/// The run's resources, removed in reverse order of registration.
#[derive(Debug, Default)]
pub struct Teardown {
    items: Vec<Resource>,
}

impl Teardown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a resource (call before creating it: removal tolerates "not found").
    pub fn push(&mut self, r: Resource) {
        self.items.push(r);
    }

    /// Registers namespace `name`, then creates it: the teardown deletes it (dropping the
    /// returned value does not).
    pub fn create_namespace(&mut self, name: &str) -> Result<Namespace, IpError> {
        self.push(Resource::Namespace(name.to_owned()));
        Namespace::create_with(name, Removal::Registered)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Removes everything; returns one line per failure (it goes on after a failure).
    ///
    /// The run's containers are killed all at once first: removed one by one, the other
    /// container went on sending while the first one's devices went (a run interrupted
    /// mid-traffic).
    pub async fn run(&mut self, docker: Option<&Docker>) -> Vec<String> {
        if let Some(d) = docker {
            let containers = self.items.iter().filter_map(|r| match r {
                Resource::Container(c) => Some(d.kill_container(c)),
                _ => None,
            });
            futures_util::future::join_all(containers).await;
        }
        let mut errors = Vec::new();
        while let Some(r) = self.items.pop() {
            let what = r.describe();
            let result: Result<(), String> = match r {
                Resource::Container(c) => match docker {
                    Some(d) => d.remove_container(&c).await.map_err(|e| e.to_string()),
                    None => Err("no connection to the Docker engine".into()),
                },
                Resource::Network(n) => match docker {
                    Some(d) => d.remove_network(&n).await.map_err(|e| e.to_string()),
                    None => Err("no connection to the Docker engine".into()),
                },
                Resource::ContainerOn { socket, name } => match remote(&socket).await {
                    Ok(Some(d)) => d.remove_container(&name).await.map_err(|e| e.to_string()),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                },
                Resource::SwarmLeave(None) => match docker {
                    Some(d) => d.leave_swarm().await.map_err(|e| e.to_string()),
                    None => Err("no connection to the Docker engine".into()),
                },
                Resource::SwarmLeave(Some(socket)) => match remote(&socket).await {
                    Ok(Some(d)) => d.leave_swarm().await.map_err(|e| e.to_string()),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                },
                Resource::SwarmNode(n) => match docker {
                    Some(d) => d.remove_node(&n).await.map_err(|e| e.to_string()),
                    None => Err("no connection to the Docker engine".into()),
                },
                Resource::Engine(e) => e.stop(None).map(drop),
                Resource::EngineFiles(e) => e.remove_state(),
                Resource::Link(l) => links::delete_link(&l).map_err(|e| e.to_string()),
                Resource::Namespace(n) => netns::delete_namespace(&n).map_err(|e| e.to_string()),
                Resource::Child(mut c) => {
                    // Our own child, by pid: ask politely, then insist.
                    // SAFETY: plain syscall on our child's pid.
                    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                    loop {
                        match c.try_wait() {
                            Ok(Some(_)) => break Ok(()),
                            Ok(None) if std::time::Instant::now() < deadline => {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await
                            }
                            _ => {
                                let _ = c.kill();
                                break c.wait().map(|_| ()).map_err(|e| e.to_string());
                            }
                        }
                    }
                }
                Resource::File(f) => match std::fs::remove_file(&f) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                    _ => Ok(()),
                },
                Resource::IptablesRule { chain, rule } => delete_rule(&chain, &rule),
            };
            if let Err(e) = result {
                errors.push(format!("could not remove {what}: {e}"));
            }
        }
        errors
    }
}

/// The engine on `socket`; `None` when it does not run (no socket, or nothing answers on it):
/// then what it holds goes with its directories.
async fn remote(socket: &std::path::Path) -> Result<Option<Docker>, String> {
    if !socket.exists() {
        return Ok(None);
    }
    match Docker::connect_socket(socket).await {
        Ok(d) => Ok(Some(d)),
        Err(crate::docker::DockerError::Unreachable { .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Deletes `rule` from `chain`; a rule that is not there (never inserted, or already gone) is
/// fine (`iptables -C` first).
pub(crate) fn delete_rule(chain: &str, rule: &[String]) -> Result<(), String> {
    let present = std::process::Command::new("iptables")
        .args(["-w", "-C", chain])
        .args(rule)
        .output()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if !present.status.success() {
        return Ok(());
    }
    let out = std::process::Command::new("iptables")
        .args(["-w", "-D", chain])
        .args(rule)
        .output()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

impl Drop for Teardown {
    /// The last resort (panics, early returns): tear down on a fresh runtime in a thread of its
    /// own, since a runtime may already be running on this one.
    fn drop(&mut self) {
        if self.items.is_empty() {
            return;
        }
        let mut rest = Teardown { items: std::mem::take(&mut self.items) };
        let needs_docker = rest.items.iter().any(|r| {
            matches!(
                r,
                Resource::Container(_)
                    | Resource::Network(_)
                    | Resource::SwarmLeave(None)
                    | Resource::SwarmNode(_)
            )
        });
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            Some(rt.block_on(async move {
                let docker = if needs_docker { Docker::connect().await.ok() } else { None };
                rest.run(docker.as_ref()).await
            }))
        })
        .join();
        match joined {
            Ok(Some(errors)) => errors.iter().for_each(|e| eprintln!("dockertrace: cleanup: {e}")),
            _ => eprintln!("dockertrace: cleanup failed; run `sudo dockertrace cleanup`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_files_and_children_in_reverse_order_also_on_drop() {
        let dir = std::env::temp_dir().join(format!("dt-teardown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a");
        std::fs::write(&f, b"x").unwrap();
        let child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        {
            let mut t = Teardown::new();
            t.push(Resource::File(f.clone()));
            t.push(Resource::Child(child));
            t.push(Resource::File(dir.join("never-created")));
            assert_eq!(t.len(), 3);
        } // dropped without run(): the guard cleans up
        assert!(!f.exists());
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "child {pid} still running");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn namespaces_it_created_go_with_the_teardown_not_with_their_value() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: creating network namespaces needs root");
            return;
        }
        let name = format!("dt-u{}-teardown", std::process::id());
        let mut t = Teardown::new();
        let ns = t.create_namespace(&name).expect("create");
        let path = ns.path();
        drop(ns);
        assert!(path.exists(), "the teardown owns {name}");
        drop(t); // the guard removes it
        assert!(!path.exists(), "{name} outlived the teardown");
    }
}
