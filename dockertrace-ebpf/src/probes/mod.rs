//! Program entry points: one file per probe family (the same family names as
//! `dockertrace_common::<family>` and `dockertrace::probes::<family>`).
mod datapath;
mod tracepoints;
