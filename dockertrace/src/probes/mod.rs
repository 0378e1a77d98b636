//! Probe families: each owns its programs from plan to decode.
//!
//! A family has the same name in the three crates: `dockertrace_common::<family>` (its wire
//! types), `dockertrace-ebpf/src/probes/<family>.rs` (its programs) and
//! `dockertrace::probes::<family>` (this side). On this side a family
//! 1. **plans** what to attach from the user's options and the running kernel (before loading,
//!    so that a bad selection fails before anything touches the kernel);
//! 2. **configures** its maps in the loaded object ([`Family::configure`]);
//! 3. **attaches** its programs, names the event kinds they emit in the [`Catalog`] and keeps
//!    a status the user is shown ([`Family::attach`]);
//! 4. lists its attached **programs** for the cost report ([`Family::programs`]).
//!
//! Decoding needs nothing per family: every family's programs emit `record::Event`s whose
//! `kind` the catalog names. A family with a record kind of its own adds a `RECORD_*` and a
//! variant of `decode::Record`.
//!
//! The conductor ([`crate::tracer::Tracer::start`]) loads the object once and calls each family
//! in turn. Adding a family: see docs/architecture.md, "How to add a probe family".
use std::sync::Arc;

use aya::{programs::ProgramError, Btf, Ebpf};
use foldhash::HashMap;

use crate::{errors::chain, kernel::kallsyms::Kallsyms, trace_error::TraceError};

pub mod datapath;
pub mod tracepoints;

/// Event names by kind.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    names: HashMap<u32, Arc<str>>,
}

impl Catalog {
    pub fn insert(&mut self, kind: u32, name: &str) {
        self.names.insert(kind, Arc::from(name));
    }

    /// The event's name (`net:net_dev_xmit`, `kprobe:veth_xmit`), or `unknown:<kind>`.
    pub fn name(&self, kind: u32) -> Arc<str> {
        self.names.get(&kind).cloned().unwrap_or_else(|| Arc::from(format!("unknown:{kind}")))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// One attached program, for the cost report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedProgram {
    /// What it is attached to (`net:netif_rx`, `kprobe:veth_xmit`).
    pub label: String,
    /// The program's name in the object (`dt_tp_3`, `kp_veth_xmit`).
    pub program: String,
    /// Whether it reports events (pairing partners only keep bookkeeping).
    pub emits: bool,
}

/// What the families may use while attaching. The conductor attaches the tracepoints while it
/// holds the kernel's BTF (parsed once, shared with the loader), and the datapath probes after
/// that parse is dropped and the symbols are loaded, so that the two never add up in memory.
#[derive(Default, Clone, Copy)]
pub struct AttachEnv<'a> {
    pub btf: Option<&'a Btf>,
    pub kallsyms: Option<&'a Kallsyms>,
}

/// The conductor's view of a probe family, once its plan is made.
pub trait Family {
    /// The family's name, the same in the three crates.
    fn name(&self) -> &'static str;
    /// Writes the family's configuration maps; runs before any program is attached.
    fn configure(&mut self, ebpf: &mut Ebpf) -> Result<(), TraceError>;
    /// Loads and attaches the family's programs and names their event kinds in `catalog`.
    /// Programs that cannot attach are kept in the family's status; an error here means the
    /// trace cannot go on.
    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        env: &AttachEnv<'_>,
        catalog: &mut Catalog,
    ) -> Result<(), TraceError>;
    /// The programs attached.
    fn programs(&self) -> Vec<AttachedProgram>;
}

/// Whether a program error is the kernel saying "not permitted".
pub(crate) fn is_eperm(e: &ProgramError) -> bool {
    match e {
        ProgramError::LoadError { io_error, .. } => io_error.raw_os_error() == Some(libc::EPERM),
        ProgramError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::EPERM),
        _ => false,
    }
}

/// One line for a program error: the first line of its message and, for the verifier, the
/// last line of its log.
pub(crate) fn short(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            log::debug!("verifier log:\n{verifier_log}");
            // The verifier's reason is the last line before its statistics ("processed N
            // insns ...", "stack depth ...", "verification time ...").
            let log = verifier_log.to_string();
            let stats =
                |l: &str| ["processed ", "verification time", "stack depth"].iter().any(|p| l.starts_with(p));
            let mut lines = log.lines().rev().map(str::trim).filter(|l| !l.is_empty());
            let last = lines.find(|l| !stats(l)).unwrap_or("");
            format!("load failed: {io_error}{}{last}", if last.is_empty() { "" } else { ": " })
        }
        other => chain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_names_unknown_kinds() {
        let mut c = Catalog::default();
        c.insert(5, "net:netif_rx");
        assert_eq!(&*c.name(5), "net:netif_rx");
        assert_eq!(&*c.name(6), "unknown:6");
    }
}
