#![no_std]
// Empty on purpose: this library target exists so that `dockertrace` can list the eBPF crate
// as a build-dependency and cargo rebuilds the embedded object when these sources change.
