//! The errors of loading and attaching a trace: what a user can cause or meet on a kernel that
//! lacks something. Each prints as one line. Below the conductor and the families, so that both
//! can return them.

/// Errors a user can cause or meet on a kernel that lacks something. Each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(
        "dockertrace needs root (to load eBPF programs and create namespaces and links): run it with sudo"
    )]
    NotRoot,
    #[error("this dockertrace binary was built without its eBPF programs (AYA_BUILD_SKIP=1); rebuild it with `cargo xtask build`")]
    NoObject,
    #[error(transparent)]
    Tracefs(#[from] crate::kernel::tracefs::TracefsError),
    #[error(transparent)]
    Btf(#[from] crate::kernel::btf::BtfError),
    #[error(transparent)]
    Kallsyms(#[from] crate::kernel::kallsyms::KallsymsError),
    #[error("no tracepoint matches --events `{0}` on this kernel")]
    NoEvents(String),
    #[error("--events `{spec}` selects {count} tracepoints (with the entry/exit partners they need); at most {max} can be traced at once")]
    TooManyEvents { spec: String, count: usize, max: u32 },
    #[error("the kernel refused to load dockertrace's eBPF programs: {0}")]
    Load(String),
    #[error("no tracepoint could be attached (first error: {0})")]
    NothingAttached(String),
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF map error: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("internal error: {0}")]
    Internal(&'static str),
}
