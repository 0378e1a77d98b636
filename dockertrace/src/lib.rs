//! dockertrace: trace how Docker's networking modes move packets through the Linux kernel.
//!
//! The pipeline is probe → ring → decode → filter/aggregate → sinks:
//! - [`tracer`] loads the eBPF programs, configures them from [`kernel`] introspection
//!   (tracefs formats, BTF offsets) and attaches them, with in-kernel [`filter`]s;
//! - [`pipeline`] drains the ring buffer, [`decode`]s records, symbolizes [`stacks`] and feeds
//!   [`sinks`] (live terminal, JSON lines) and the [`report`] aggregate;
//! - [`select`] turns perf-style `--events` globs into the tracepoints to attach;
//! - [`workload`] is the TCP traffic generator that runs inside the containers.

pub mod aggregate;
pub mod capture;
pub mod cli;
pub mod compare;
pub mod cost;
pub mod counters;
pub mod datapath;
pub mod decode;
pub mod docker;
pub mod drops;
pub mod errors;
pub mod filter;
pub mod hints;
pub mod import;
pub mod journeys;
pub mod kernel;
pub mod modes;
pub mod names;
pub mod packet;
pub mod packet_log;
pub mod pipeline;
pub mod probes;
pub mod recording;
pub mod render;
pub mod select;
pub mod session;
pub mod sinks;
pub mod stacks;
pub mod stitch;
pub mod summary;
pub mod sys;
pub mod teardown;
pub mod trace_error;
pub mod tracer;
pub mod tui;
pub mod ui;
pub mod workload;
