//! What runs leave behind, and removing it.
//!
//! Every run records its owner (pid and start time, [`Owner`]) with what it creates: Docker
//! containers and networks carry the labels `dockertrace=<run>`, `dockertrace.pid` and
//! `dockertrace.start`; host links (the Docker runtime's macvlan/ipvlan parent) carry the alias
//! `dockertrace run=<run> pid=… start=…`, and the Docker runtime's `--inject forward-drop` rule
//! in the host's DOCKER-USER chain the same text as an iptables comment; the netns runtime keeps `/run/dockertrace/<run>.pid`
//! beside its namespaces `dockertrace-<run>-*`. A run killed with SIGKILL cannot remove what it
//! created; the next run ([`remove_dead_runs`], before it deploys) removes what belongs to
//! owners that no longer run, and says so in one line. Objects of a live owner, and objects
//! without an owner record (older versions, other tools), are never touched by a run: `dockertrace
//! cleanup` ([`remove_all`]) removes every tagged object, whoever owns it.
//!
//! The Docker overlay mode's second engine runs on after its run was killed: it is stopped by
//! its pidfile (its containers removed and its swarm left first) before anything else, and
//! after the first engine's containers and networks, the swarm the run initialised is left
//! (and docker_gwbridge removed, when the run's swarm created it), then the engine's
//! directories go (see [`Engine2`]).
use std::collections::{BTreeSet, HashMap};

use crate::{
    docker::{daemon::Engine2, Docker, LABEL_PID, LABEL_START},
    sys::{
        links,
        netns::{self, NETNS_DIR},
        owner::{self, Liveness, Owner},
    },
};

use super::netns_runtime::{ns_name, NS_PREFIX, ROLES};

/// What was removed, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The dead owners whose objects were removed (empty for `cleanup`).
    pub owners: BTreeSet<Owner>,
    pub containers: usize,
    pub networks: usize,
    pub links: usize,
    pub namespaces: usize,
    /// Second Docker engines stopped (the overlay mode's).
    pub engines: usize,
    /// iptables rules deleted (`--inject forward-drop`'s, in the host's DOCKER-USER).
    pub rules: usize,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.containers + self.networks + self.links + self.namespaces + self.engines + self.rules == 0
    }

    /// `2 containers, 1 network, 3 links` (kinds with nothing removed are left out).
    pub fn counts(&self) -> String {
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        [
            (self.containers, "container", "containers"),
            (self.networks, "network", "networks"),
            (self.links, "link", "links"),
            (self.namespaces, "namespace", "namespaces"),
            (self.engines, "Docker engine", "Docker engines"),
            (self.rules, "iptables rule", "iptables rules"),
        ]
        .iter()
        .filter(|(n, ..)| *n > 0)
        .map(|(n, one, many)| plural(*n, one, many))
        .collect::<Vec<_>>()
        .join(", ")
    }

    /// The one line a run prints when it removed what dead runs left.
    pub fn line(&self) -> String {
        let pids: Vec<String> = self.owners.iter().map(|o| o.pid.to_string()).collect();
        let who = match pids.len() {
            1 => format!("an earlier run (pid {}, gone)", pids[0]),
            n => format!("{n} earlier runs (pids {}, gone)", pids.join(", ")),
        };
        format!("removed what {who} left: {}", self.counts())
    }
}

/// The owner an object's labels name (`None`: no owner recorded).
pub fn owner_of_labels(labels: &HashMap<String, String>) -> Option<Owner> {
    Some(Owner { pid: labels.get(LABEL_PID)?.parse().ok()?, start: labels.get(LABEL_START)?.parse().ok()? })
}

/// Removes what runs whose process is gone left behind: their containers and networks (when
/// `docker` is given), host links, namespaces and state files. Never touches anything of a
/// live run, nor anything without an owner record.
pub async fn remove_dead_runs(docker: Option<&Docker>) -> anyhow::Result<Removed> {
    let mut removed = Removed::default();
    let dead = |o: &Owner| o.liveness() == Liveness::Gone;
    let dead_runs: Vec<(String, Owner, std::path::PathBuf)> =
        owner::states().into_iter().filter(|(_, o, _)| dead(o)).collect();
    // Second engines first: their containers hold the overlay network of the first engine.
    for (run, o, _) in &dead_runs {
        if stop_engine(&Engine2::new(run)).await? {
            removed.engines += 1;
            removed.owners.insert(*o);
        }
    }
    if let Some(d) = docker {
        // Containers first: a network in use cannot be removed.
        for (id, labels) in d.containers_with_label(LABEL_PID).await? {
            if let Some(o) = owner_of_labels(&labels).filter(dead) {
                d.remove_container(&id).await?;
                removed.containers += 1;
                removed.owners.insert(o);
            }
        }
        // A swarm such a run initialised goes before the networks: its overlay network goes
        // with it (a worker that vanished keeps it "in use" otherwise).
        for (run, ..) in &dead_runs {
            leave_swarm(&Engine2::new(run), d).await?;
        }
        for (id, labels) in d.networks_with_label(LABEL_PID).await? {
            if let Some(o) = owner_of_labels(&labels).filter(dead) {
                d.remove_network(&id).await?;
                removed.networks += 1;
                removed.owners.insert(o);
            }
        }
    }
    if docker.is_some() {
        for (rule, o) in tagged_rules() {
            if let Some(o) = o.filter(dead) {
                delete_rule(&rule)?;
                removed.rules += 1;
                removed.owners.insert(o);
            }
        }
    }
    for (link, alias) in links::tagged_links_with_alias() {
        if let Some(o) = Owner::from_tag(&alias).filter(dead) {
            // A veth pair carries the tag on both ends: the second is gone with the first.
            if std::path::Path::new("/sys/class/net").join(&link).exists() {
                links::delete_link(&link)?;
                removed.links += 1;
            }
            removed.owners.insert(o);
        }
    }
    for (run, o, state) in dead_runs {
        let engine = Engine2::new(&run);
        // The swarm it initialised needs the Docker engine: without it, the state stays for a
        // later run that has it.
        let keep = engine.exists() && !finish_engine(&engine, docker).await?;
        let names = ROLES.map(|role| ns_name(&run, role));
        for ns in namespaces().into_iter().filter(|n| names.contains(n)) {
            netns::delete_namespace(&ns)?;
            removed.namespaces += 1;
        }
        if !keep {
            remove_file(&state)?;
        }
        removed.owners.insert(o);
    }
    Ok(removed)
}

/// `dockertrace cleanup`: removes every container and network labelled
/// [`LABEL`](crate::docker::LABEL) (when `docker`
/// is given), every tagged host link, every `dockertrace-*` namespace and every state file,
/// whoever owns them.
pub async fn remove_all(docker: Option<&Docker>) -> anyhow::Result<Removed> {
    let mut removed = Removed::default();
    let engines = Engine2::all();
    for e in &engines {
        removed.engines += usize::from(stop_engine(e).await?);
    }
    if let Some(d) = docker {
        let containers = d.labelled_containers(None).await?;
        for c in &containers {
            d.remove_container(c).await?;
        }
        for e in &engines {
            leave_swarm(e, d).await?;
        }
        let networks = d.labelled_networks(None).await?;
        for n in &networks {
            d.remove_network(n).await?;
        }
        (removed.containers, removed.networks) = (containers.len(), networks.len());
    }
    for (rule, _) in tagged_rules() {
        delete_rule(&rule)?;
        removed.rules += 1;
    }
    let linkset = links::tagged_links();
    for l in &linkset {
        links::delete_link(l)?;
    }
    removed.links = linkset.len();
    for ns in namespaces().into_iter().filter(|n| n.starts_with(NS_PREFIX)) {
        netns::delete_namespace(&ns)?;
        removed.namespaces += 1;
    }
    for e in &engines {
        finish_engine(e, docker).await?;
    }
    for (_, _, state) in owner::states() {
        remove_file(&state)?;
    }
    Ok(removed)
}

/// Stops the second engine of a run, if it runs: its containers removed and its swarm left
/// first, when it answers. Returns whether it ran.
async fn stop_engine(e: &Engine2) -> anyhow::Result<bool> {
    if e.socket().exists() {
        if let Ok(d) = Docker::connect_socket(&e.socket()).await {
            // Containers only: the networks it sees are the first engine's swarm networks.
            // It is stopped next whatever it answers (a worker cut off from its manager may
            // not manage to leave).
            for c in d.labelled_containers(None).await.unwrap_or_default() {
                if let Err(err) = d.remove_container(&c).await {
                    log::warn!("second engine of run {}: {err}", e.run);
                }
            }
            if let Err(err) = d.leave_swarm().await {
                log::warn!("second engine of run {}: {err}", e.run);
            }
        }
    }
    e.stop(None).map_err(anyhow::Error::msg)
}

/// Leaves the first engine's swarm when run `e` initialised it (its swarm mark): its overlay
/// network and `ingress` go with it.
async fn leave_swarm(e: &Engine2, docker: &Docker) -> anyhow::Result<()> {
    if e.swarm_mark().is_some() {
        docker.leave_swarm().await?;
    }
    Ok(())
}

/// After the first engine's containers and networks and its swarm ([`leave_swarm`]): removes
/// docker_gwbridge when the run's swarm created it, then the run's engine directories.
/// Without a connection to the first engine a swarm mark stays (false).
async fn finish_engine(e: &Engine2, docker: Option<&Docker>) -> anyhow::Result<bool> {
    if let Some(gwbridge) = e.swarm_mark() {
        let Some(d) = docker else { return Ok(false) };
        if gwbridge {
            d.remove_network("docker_gwbridge").await?;
        }
    }
    e.remove_state().map_err(anyhow::Error::msg)?;
    Ok(true)
}

/// Names of the named network namespaces.
fn namespaces() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The chain the Docker runtime's `forward-drop` rule goes to.
const RULE_CHAIN: &str = "DOCKER-USER";

/// The rules of the host's DOCKER-USER chain that a run tagged, each as its rule spec (what
/// follows `-A DOCKER-USER` in `iptables -S`) with the owner its comment names. None where
/// iptables or the chain is missing (no Docker, or Docker without its iptables integration).
fn tagged_rules() -> Vec<(Vec<String>, Option<Owner>)> {
    match std::process::Command::new("iptables").args(["-w", "-S", RULE_CHAIN]).output() {
        Ok(out) if out.status.success() => parse_tagged_rules(&String::from_utf8_lossy(&out.stdout)),
        _ => Vec::new(),
    }
}

/// [`tagged_rules`] from `iptables -S` text: a rule whose `--comment` starts with the tag.
fn parse_tagged_rules(text: &str) -> Vec<(Vec<String>, Option<Owner>)> {
    text.lines()
        .filter_map(|l| {
            let words = split_quoted(l);
            let spec = words.strip_prefix(["-A".to_owned(), RULE_CHAIN.to_owned()].as_slice())?;
            let comment = spec.windows(2).find(|w| w[0] == "--comment").map(|w| &w[1])?;
            let tagged = comment.strip_prefix(links::LINK_ALIAS)?.starts_with(" run=");
            tagged.then(|| (spec.to_vec(), Owner::from_tag(comment)))
        })
        .collect()
}

/// Words of one `iptables -S` line: separated by spaces, a double-quoted word may hold spaces
/// (and backslash-escaped quotes).
fn split_quoted(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut quoted, mut escaped, mut started) = (String::new(), false, false, false);
    for c in line.chars() {
        if escaped {
            word.push(c);
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            (quoted, started) = (!quoted, true);
        } else if c == ' ' && !quoted {
            if started || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            started = false;
        } else {
            word.push(c);
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

fn delete_rule(rule: &[String]) -> anyhow::Result<()> {
    crate::teardown::delete_rule(RULE_CHAIN, rule)
        .map_err(|e| anyhow::anyhow!("cannot delete the iptables rule {RULE_CHAIN} {}: {e}", rule.join(" ")))
}

fn remove_file(path: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::new(e).context(format!("cannot remove {}", path.display())))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::LABEL;

    #[test]
    fn the_line_names_the_dead_runs_and_what_they_left() {
        let mut r = Removed { containers: 2, networks: 1, links: 3, ..Default::default() };
        r.owners.insert(Owner { pid: 1234, start: 5 });
        assert_eq!(
            r.line(),
            "removed what an earlier run (pid 1234, gone) left: 2 containers, 1 network, 3 links"
        );
        r.owners.insert(Owner { pid: 99, start: 5 });
        r.namespaces = 1;
        assert_eq!(
            r.line(),
            "removed what 2 earlier runs (pids 99, 1234, gone) left: 2 containers, 1 network, 3 links, 1 namespace"
        );
        assert_eq!(Removed::default().counts(), "");
        assert!(Removed::default().is_empty());
    }

    #[test]
    fn tagged_rules_are_read_back_from_iptables_s() {
        let text = [
            "-N DOCKER-USER",
            "-A DOCKER-USER -s 10.0.0.3/32 -d 10.0.0.2/32 -i br-1 -o br-1 -p tcp -m tcp --dport 10000 \
             -m comment --comment \"dockertrace run=ab12cd34 pid=77 start=99\" -j DROP",
            "-A DOCKER-USER -m comment --comment \"dockertracer run=x pid=1 start=2\" -j DROP",
            "-A DOCKER-USER -m comment --comment \"someone else's\" -j ACCEPT",
            "-A DOCKER-USER -j RETURN",
        ]
        .join("\n");
        let rules = parse_tagged_rules(&text);
        assert_eq!(rules.len(), 1, "{rules:?}");
        let (spec, owner) = &rules[0];
        assert_eq!(*owner, Some(Owner { pid: 77, start: 99 }));
        assert_eq!(spec.first().map(String::as_str), Some("-s"));
        assert!(spec.contains(&"dockertrace run=ab12cd34 pid=77 start=99".to_owned()), "{spec:?}");
        assert_eq!(spec.last().map(String::as_str), Some("DROP"));
        let words = split_quoted("-A X --comment \"a \\\"b\\\" c\" -j \"\"");
        assert_eq!(words, ["-A", "X", "--comment", "a \"b\" c", "-j", ""]);
    }

    #[test]
    fn owners_come_from_both_labels() {
        let labels =
            |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_eq!(
            owner_of_labels(&labels(&[(LABEL, "r"), (LABEL_PID, "7"), (LABEL_START, "8")])),
            Some(Owner { pid: 7, start: 8 })
        );
        assert_eq!(owner_of_labels(&labels(&[(LABEL, "r"), (LABEL_PID, "7")])), None, "no start time");
        assert_eq!(owner_of_labels(&labels(&[(LABEL, "r")])), None, "an older run");
    }

    #[test]
    fn this_process_is_never_a_dead_run() {
        assert_eq!(Owner::current().liveness(), Liveness::Alive);
    }
}
