//! Command-line interface: one file per subcommand.
use clap::{Parser, Subcommand};

pub mod trace;

/// Trace how Docker's networking modes move packets through the Linux kernel.
///
/// dockertrace attaches eBPF programs to the kernel's `net:*` tracepoints and to the datapath
/// transmit functions (veth, bridge, macvlan, ipvlan, loopback), streams every event with its
/// kernel stack, and summarizes which kernel functions each packet went through.
#[derive(Parser, Debug)]
#[command(name = "dockertrace", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace the host's network stack like `perf record -ae 'net:*' --call-graph fp`, live.
    Trace(trace::TraceArgs),
    /// The TCP echo traffic generator that dockertrace runs inside containers.
    #[command(subcommand)]
    Workload(crate::workload::WorkloadCommand),
}
