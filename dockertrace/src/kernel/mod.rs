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
