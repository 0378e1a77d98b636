//! Progress on stderr: a spinner on a terminal, plain lines otherwise.
use std::{io::IsTerminal, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

/// Reports the steps of setup and teardown.
pub struct Ui {
    bar: Option<ProgressBar>,
}

impl Ui {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}").expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        Ui { bar }
    }

    /// A new step.
    pub fn step(&self, msg: &str) {
        match &self.bar {
            Some(b) => {
                b.reset_elapsed();
                b.set_message(msg.to_owned());
            }
            None => eprintln!("dockertrace: {msg}"),
        }
    }

    /// A line that stays (notes, warnings).
    pub fn line(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// Clears the spinner (before the live stream takes the terminal).
    pub fn clear(&self) {
        if let Some(b) = &self.bar {
            b.set_message(String::new());
            b.finish_and_clear();
        }
    }

    /// Starts showing the spinner again (for teardown).
    pub fn resume(&mut self) {
        if self.bar.as_ref().is_some_and(|b| b.is_finished()) {
            *self = Ui::new();
        }
    }
}

impl Default for Ui {
    fn default() -> Self {
        Self::new()
    }
}
