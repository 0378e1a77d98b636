//! The exit codes of every command, in one place (README, "Exit codes"; `tests/ci.rs` runs
//! the binary for each).
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done (also `trace` stopped by Ctrl-C or SIGTERM: its normal end) |
//! | 1 | an error (one line on stderr, `dockertrace: error: …`) |
//! | 2 | a usage error: arguments clap rejects, or a CPU the machine lacks (before anything runs) |
//! | 3 | `diff --fail-on`: a guarded change happened |
//! | 130 | a `--mode` run cut short by Ctrl-C or SIGTERM (what ran is reported and cleaned up) |

/// The command did what it was asked.
pub const OK: i32 = 0;
/// An error: the one line on stderr says what.
pub const ERROR: i32 = 1;
/// A usage error: clap's own code for arguments it rejects.
pub const USAGE: i32 = 2;
/// `diff --fail-on`: a guarded change happened (the guard tripped).
pub const GUARD_TRIPPED: i32 = 3;
/// A `--mode` run ended by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
pub const INTERRUPTED: i32 = 130;

/// An error that ends the command with a code of its own rather than [`ERROR`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl Exit {
    /// A run cut short by Ctrl-C or SIGTERM.
    pub fn interrupted(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Exit { code: INTERRUPTED, message: message.into() })
    }
}

/// The exit code for an error: its own when it carries one ([`Exit`]), else [`ERROR`].
pub fn code_of(e: &anyhow::Error) -> i32 {
    e.chain().find_map(|c| c.downcast_ref::<Exit>()).map_or(ERROR, |x| x.code)
}

/// Whether an error is a Ctrl-C/SIGTERM interruption.
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    code_of(e) == INTERRUPTED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_their_code() {
        assert_eq!(code_of(&anyhow::anyhow!("plain")), ERROR);
        let e = Exit::interrupted("interrupted during setup");
        assert_eq!((code_of(&e), e.to_string()), (INTERRUPTED, "interrupted during setup".to_owned()));
        assert!(is_interrupted(&e.context("mode bridge")), "found through context");
        assert!(!is_interrupted(&anyhow::anyhow!("x")));
    }
}
