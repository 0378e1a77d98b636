//! `dockertrace cleanup`: removes what crashed runs left behind, recognized by dockertrace's
//! label (containers, networks), link alias (host links), iptables comment (`--inject
//! forward-drop`'s rule in DOCKER-USER), name prefix (namespaces) and state
//! directory (the overlay mode's second Docker engines, stopped by their pidfile), whoever owns
//! them (a run removes only what dead runs left; see `modes::leftovers`).
use crate::{docker::Docker, modes::leftovers};

pub fn run() -> anyhow::Result<()> {
    crate::tracer::preflight_root()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let docker = match rt.block_on(Docker::connect()) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("dockertrace: skipping Docker objects: {e}");
            None
        }
    };
    let removed = rt.block_on(leftovers::remove_all(docker.as_ref()))?;
    let mut counts = Vec::new();
    if docker.is_some() {
        counts.push(format!("{} containers, {} networks", removed.containers, removed.networks));
    }
    counts.push(format!("{} links", removed.links));
    counts.push(format!("{} namespaces", removed.namespaces));
    if removed.rules > 0 {
        counts.push(match removed.rules {
            1 => "1 iptables rule".to_owned(),
            n => format!("{n} iptables rules"),
        });
    }
    if removed.engines > 0 {
        counts.push(match removed.engines {
            1 => "1 second Docker engine stopped".to_owned(),
            n => format!("{n} second Docker engines stopped"),
        });
    }
    println!("dockertrace: removed {}", counts.join(", "));
    Ok(())
}
