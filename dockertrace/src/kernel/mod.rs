//! Kernel introspection: tracefs, BTF, kallsyms.
//!
//! - [`tracefs`]: the tracepoints of this kernel and the layout of their records;
//! - [`btf`]: struct member offsets from the kernel's BTF, handed to the eBPF programs;
//! - [`kallsyms`]: kernel symbolization of stack addresses.

pub mod btf;
pub mod kallsyms;
pub mod tracefs;

pub use btf::{BtfError, KernelBtf, MemberInfo};
pub use kallsyms::{Kallsyms, KallsymsError, Symbol};
pub use tracefs::{TpField, TpFormat, Tracefs, TracefsError, TracepointId};

/// The running kernel's version (major, minor), from `/proc/sys/kernel/osrelease`.
pub fn version() -> Option<(u32, u32)> {
    parse_version(&std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?)
}

/// `6.1.0-57-amd64` → (6, 1).
fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions() {
        assert_eq!(super::parse_version("6.1.0-57-amd64\n"), Some((6, 1)));
        assert_eq!(super::parse_version("5.10.0-46-amd64"), Some((5, 10)));
        assert_eq!(super::parse_version("6.18.3"), Some((6, 18)));
        assert_eq!(super::parse_version("garbage"), None);
    }
}
