//! dockertrace: trace how Docker's networking modes move packets through the Linux kernel.
//!
//! The pipeline is probe → ring → decode → filter/aggregate → sinks:
//! - [`kernel`] reads what the running kernel offers (tracefs formats, BTF offsets, kallsyms);
//! - [`select`] turns perf-style `--events` globs into the tracepoints to attach;
//! - [`workload`] is the TCP traffic generator that runs inside the containers.

pub mod kernel;
pub mod select;
pub mod workload;
