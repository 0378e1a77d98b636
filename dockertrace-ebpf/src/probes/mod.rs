//! Program entry points: one file per kind of probe.
mod datapath;
mod tracepoint;
