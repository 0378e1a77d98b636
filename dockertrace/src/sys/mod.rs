//! The system below the runs: network namespaces, links, CPU pinning, and which process owns
//! what a run left in the system. Nothing here knows about modes, runtimes or the teardown.
pub mod cpus;
pub mod links;
pub mod netns;
pub mod owner;
