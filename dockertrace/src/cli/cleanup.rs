//! `dockertrace cleanup`: removes what crashed runs left behind, recognized by dockertrace's
//! label (containers, networks), link alias (host links) and name prefix (namespaces).
use crate::{docker::Docker, modes::links, netns};

pub fn run() -> anyhow::Result<()> {
    crate::tracer::preflight_root()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut removed = Vec::new();
    match rt.block_on(Docker::connect()) {
        Ok(d) => {
            let (c, n) = rt.block_on(d.remove_all_labelled())?;
            removed.push(format!("{c} containers, {n} networks"));
        }
        Err(e) => eprintln!("dockertrace: skipping Docker objects: {e}"),
    }
    let linkset = links::tagged_links();
    for l in &linkset {
        links::delete_link(l)?;
    }
    removed.push(format!("{} links", linkset.len()));
    let mut spaces = 0;
    for e in std::fs::read_dir("/var/run/netns").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("dockertrace-") {
            netns::ip(&["netns", "del", &name])?;
            spaces += 1;
        }
    }
    removed.push(format!("{spaces} namespaces"));
    println!("dockertrace: removed {}", removed.join(", "));
    Ok(())
}
