//! Kernel introspection: tracefs, BTF, kallsyms.
