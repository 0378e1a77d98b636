//! Terminal styling: ANSI colors only when the stream is a terminal and NO_COLOR is unset.
use std::io::IsTerminal;

/// `NO_COLOR` asks for no color when it is set and not empty (no-color.org).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn for_stdout() -> Self {
        Style { color: std::io::stdout().is_terminal() && !no_color() }
    }

    pub fn for_stderr() -> Self {
        Style { color: std::io::stderr().is_terminal() && !no_color() }
    }

    pub fn plain() -> Self {
        Style { color: false }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn cyan(&self, s: &str) -> String {
        self.paint("36", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    /// Drops: bold white on red, so that they stand out of the live stream.
    pub fn alarm(&self, s: &str) -> String {
        self.paint("1;97;41", s)
    }
}
