//! What the user sees on stderr: a progress bar for whole-file work (hashing, one
//! PUT, a download) on a terminal, and for uploads in parts a line as parts finish,
//! terminal or not, a few times a second at most.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Files smaller than this get no progress bar.
const BAR_THRESHOLD: u64 = 4 * 1024 * 1024;
/// Least time between two progress lines (the last one is always printed).
const LINE_INTERVAL: Duration = Duration::from_millis(250);

/// A progress bar over `len` bytes (hidden for small files and off a terminal).
pub(super) fn bar(len: u64, what: &str) -> ProgressBar {
    if len < BAR_THRESHOLD {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// `n` bytes as MiB with one decimal.
pub(super) fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
}

/// Parts and bytes of an upload in parts that the store holds.
pub(super) struct PartsProgress {
    parts_done: u64,
    part_count: u64,
    bytes_done: u64,
    size: u64,
    last_line: Option<Instant>,
}

impl PartsProgress {
    /// Progress of `part_count` parts making `size` bytes, none done.
    pub(super) fn new(part_count: u64, size: u64) -> Self {
        Self {
            parts_done: 0,
            part_count,
            bytes_done: 0,
            size,
            last_line: None,
        }
    }

    /// Counts a part already held (resume) without printing.
    pub(super) fn held(&mut self, bytes: u64) {
        self.parts_done += 1;
        self.bytes_done += bytes;
    }

    /// Counts a part just sent, printing a line unless one was printed very
    /// recently (the line of the last part always is).
    pub(super) fn sent(&mut self, bytes: u64) {
        self.parts_done += 1;
        self.bytes_done += bytes;
        let due = self
            .last_line
            .is_none_or(|at| at.elapsed() >= LINE_INTERVAL);
        if due || self.parts_done >= self.part_count {
            self.print();
        }
    }

    /// Prints the current line now.
    pub(super) fn print(&mut self) {
        eprintln!("{}", self.line());
        self.last_line = Some(Instant::now());
    }

    fn line(&self) -> String {
        format!(
            "parts {}/{}, {} of {}",
            self.parts_done,
            self.part_count,
            mib(self.bytes_done),
            mib(self.size)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_parts_and_mebibytes() {
        let mut progress = PartsProgress::new(40, 200 * 1024 * 1024);
        for _ in 0..12 {
            progress.held(5 * 1024 * 1024);
        }
        assert_eq!(progress.line(), "parts 12/40, 60.0 MiB of 200.0 MiB");
    }
}
