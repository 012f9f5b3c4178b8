//! Progress of a long benchmark phase on stderr: one line redrawn in place (about 10 times a
//! second) when stderr is a terminal, else a plain line every few seconds (logs, CI), so the
//! figures on stdout stay clean. Hand-written rather than `indicatif`: that crate draws nothing
//! when stderr is not a terminal, and the periodic lines are what a CI log needs.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const TERMINAL_INTERVAL: Duration = Duration::from_millis(100);
const LOG_INTERVAL: Duration = Duration::from_secs(5);

pub struct Progress {
    label: String,
    unit: &'static str,
    total: u64,
    done: u64,
    bytes: u64,
    started: Instant,
    last_drawn: Instant,
    terminal: bool,
    drawn: bool,
}

impl Progress {
    /// `total` units (`unit`: "requests", "records") are expected.
    pub fn new(label: impl Into<String>, total: u64, unit: &'static str) -> Progress {
        let now = Instant::now();
        Progress {
            label: label.into(),
            unit,
            total,
            done: 0,
            bytes: 0,
            started: now,
            last_drawn: now,
            terminal: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    /// `units` more done, carrying `bytes`.
    pub fn advance(&mut self, units: u64, bytes: u64) {
        self.done += units;
        self.bytes += bytes;
        let interval = if self.terminal { TERMINAL_INTERVAL } else { LOG_INTERVAL };
        if self.last_drawn.elapsed() >= interval {
            self.last_drawn = Instant::now();
            self.draw();
        }
    }

    fn line(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let percent = if self.total == 0 { 100.0 } else { self.done as f64 * 100.0 / self.total as f64 };
        format!(
            "{}: {}/{} {} ({percent:.0}%), {:.1} MB/s, {:.1} s",
            self.label,
            self.done,
            self.total,
            self.unit,
            self.bytes as f64 / 1e6 / seconds,
            seconds
        )
    }

    fn draw(&mut self) {
        let line = self.line();
        let mut stderr = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not fail the benchmark.
        let _ = if self.terminal { write!(stderr, "\r\x1b[2K{line}") } else { writeln!(stderr, "{line}") };
        let _ = stderr.flush();
        self.drawn = true;
    }

    /// Ends the in-place line (a terminal keeps the final figures on their own line).
    pub fn finish(mut self) {
        if self.terminal && self.drawn {
            self.draw();
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_counts_percent_and_rate() {
        let mut progress = Progress::new("run 1/3: produce", 200, "requests");
        progress.done = 50;
        progress.bytes = 1_000_000;
        let line = progress.line();
        assert!(line.starts_with("run 1/3: produce: 50/200 requests (25%), "), "{line}");
        assert!(line.contains(" MB/s, "), "{line}");
    }
}
