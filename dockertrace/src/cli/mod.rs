//! Command-line interface: one file per subcommand.
use clap::{Parser, Subcommand};

pub mod cleanup;
pub mod exit;
pub mod junit;
pub mod offline;
pub mod outputs;
pub mod run;
pub mod trace;

/// Trace how Docker's networking modes move packets through the Linux kernel.
///
/// dockertrace attaches eBPF programs to the kernel's `net:*` tracepoints and to the datapath
/// transmit functions (veth, bridge, macvlan, ipvlan, vxlan, loopback), streams every event with its
/// kernel stack, and summarizes which kernel functions each packet went through.
///
/// The main job, `dockertrace --mode MODE`, launches a TCP echo workload on that networking mode
/// (normal, host, bridge, bridge-user, macvlan, ipvlan-l2, ipvlan-l3, overlay, overlay-local), traces
/// only its packets,
/// reports, and removes everything it created.
#[derive(Parser, Debug)]
#[command(
    name = "dockertrace",
    version,
    propagate_version = true,
    max_term_width = 100,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Exit codes: 0 done, 1 an error (one line on stderr), 2 a usage error (before anything \
                  runs), 3 `diff --fail-on` tripped, 130 a --mode run interrupted by Ctrl-C or SIGTERM."
)]
pub struct Cli {
    #[command(flatten)]
    pub run: run::RunArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace the host's network stack like `perf record -ae 'net:*' --call-graph fp`, live.
    Trace(trace::TraceArgs),
    /// The TCP echo traffic generator that dockertrace runs inside containers.
    #[command(subcommand)]
    Workload(crate::workload::WorkloadCommand),
    /// Remove containers, networks, links and namespaces left behind by crashed runs.
    Cleanup,
    /// Rebuild the per-mode reports and the comparison from recordings (`--record`, `import`).
    Report(offline::ReportArgs),
    /// Compare two recordings; with --fail-on, exit 3 when the datapath changed.
    Diff(offline::DiffArgs),
    /// Turn `perf script` text (perf record -e 'net:*' --call-graph fp) into a recording.
    Import(offline::ImportArgs),
}
