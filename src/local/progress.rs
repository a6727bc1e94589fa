//! Progress a person can follow: one line per phase with the time since the run started, and
//! a byte progress bar for layer streaming when stderr is a terminal (plain lines otherwise, so
//! CI logs stay readable).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    start: Instant,
    tty: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Seconds since the run started.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// `[  12.3s] phase      what happened`
    pub fn phase(&self, phase: &str, message: &str) {
        eprintln!("{}", self.line(phase, message));
    }

    fn line(&self, phase: &str, message: &str) -> String {
        format!("[{:>7.1}s] {phase:<11} {message}", self.elapsed())
    }

    /// A bar over `total` bytes on a terminal; hidden otherwise (the phase line that follows
    /// says what was streamed).
    pub fn bytes(&self, label: &str, total: u64) -> ProgressBar {
        if !self.tty {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{prefix:>11} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        bar
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_lines_align_and_carry_the_elapsed_time() {
        let p = Progress::new();
        let line = p.line("harden", "pushed x");
        assert!(
            line.starts_with("[    0.0s] harden      pushed x"),
            "{line:?}"
        );
    }

    #[test]
    fn no_bar_without_a_terminal() {
        let p = Progress {
            start: Instant::now(),
            tty: false,
        };
        assert!(p.bytes("layer", 10).is_hidden());
    }
}
