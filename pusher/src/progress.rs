//! Upload progress for `ferry upload` and `ferry push`: paths and bytes with rate and ETA,
//! as an indicatif bar when stderr is a terminal, as one plain line per uploaded path when
//! it is not (logs, CI), and nothing with `--quiet`. The uploader feeds it NAR bytes as they
//! are compressed and each path once its NAR is in the bucket; feeding is an atomic add or
//! indicatif's own rate-limited update, so the upload path does not wait on drawing.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{BinaryBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live bar on stderr.
    Bar,
    /// One line per uploaded path on stderr.
    Lines,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// The mode for `--quiet` and whether stderr is a terminal.
    pub fn choose(quiet: bool, stderr_is_terminal: bool) -> Mode {
        match (quiet, stderr_is_terminal) {
            (true, _) => Mode::Quiet,
            (false, true) => Mode::Bar,
            (false, false) => Mode::Lines,
        }
    }

    /// The mode for this process's stderr.
    pub fn for_stderr(quiet: bool) -> Mode {
        Mode::choose(quiet, std::io::stderr().is_terminal())
    }
}

/// Where an upload stands, for a plain progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// Paths whose NAR is in the bucket.
    pub done_paths: u64,
    /// Paths to upload in all.
    pub total_paths: u64,
    /// Uncompressed NAR bytes of the done paths.
    pub done_bytes: u64,
    /// Uncompressed NAR bytes to upload in all.
    pub total_bytes: u64,
    /// Time since the upload started.
    pub elapsed: Duration,
}

impl Figures {
    /// NAR bytes per second so far; `None` before anything is done.
    pub fn rate(&self) -> Option<f64> {
        let secs = self.elapsed.as_secs_f64();
        (self.done_bytes > 0 && secs > 0.0).then(|| self.done_bytes as f64 / secs)
    }

    /// Time left at the rate so far; `None` while the rate is unknown.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate()?;
        let left = self.total_bytes.saturating_sub(self.done_bytes) as f64;
        Some(Duration::from_secs_f64(left / rate))
    }
}

/// The plain line printed when `path` is uploaded (`nar_size` → `file_size` bytes).
pub fn plain_line(figures: &Figures, path: &str, nar_size: u64, file_size: u64) -> String {
    let rate = figures
        .rate()
        .map_or("-".to_owned(), |r| format!("{}/s", BinaryBytes(r as u64)));
    let eta = figures
        .eta()
        .map_or("-".to_owned(), |e| HumanDuration(e).to_string());
    format!(
        "[{}/{}] uploaded {path} ({} → {}); {} of {}, {rate}, ETA {eta}",
        figures.done_paths,
        figures.total_paths,
        BinaryBytes(nar_size),
        BinaryBytes(file_size),
        BinaryBytes(figures.done_bytes),
        BinaryBytes(figures.total_bytes),
    )
}

/// The bar's look: bytes (NAR bytes compressed so far) with rate and ETA; the message
/// counts paths.
const BAR_TEMPLATE: &str = "{elapsed:>4} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}";

#[derive(Debug)]
struct Inner {
    mode: Mode,
    bar: Option<ProgressBar>,
    started: Instant,
    total_paths: u64,
    total_bytes: u64,
    done_paths: AtomicU64,
    done_bytes: AtomicU64,
}

/// Progress of one upload; cheap to clone into the compression threads.
#[derive(Debug, Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

impl Progress {
    /// Starts showing the upload of `total_paths` paths of `total_bytes` NAR bytes.
    pub fn start(mode: Mode, total_paths: u64, total_bytes: u64) -> Progress {
        let bar = (mode == Mode::Bar && total_paths > 0).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total_bytes),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(format!("0/{total_paths} paths"));
            bar
        });
        Progress {
            inner: Arc::new(Inner {
                mode,
                bar,
                started: Instant::now(),
                total_paths,
                total_bytes,
                done_paths: AtomicU64::new(0),
                done_bytes: AtomicU64::new(0),
            }),
        }
    }

    /// `n` more NAR bytes went through compression.
    pub fn nar_bytes(&self, n: u64) {
        if let Some(bar) = &self.inner.bar {
            bar.inc(n);
        }
    }

    /// `path`'s NAR (`nar_size` bytes, `file_size` compressed) is in the bucket.
    pub fn path_done(&self, path: &str, nar_size: u64, file_size: u64) {
        let inner = &self.inner;
        let done_paths = inner.done_paths.fetch_add(1, Ordering::Relaxed) + 1;
        let done_bytes = inner.done_bytes.fetch_add(nar_size, Ordering::Relaxed) + nar_size;
        match inner.mode {
            Mode::Bar => {
                if let Some(bar) = &inner.bar {
                    bar.set_message(format!("{done_paths}/{} paths", inner.total_paths));
                }
            }
            Mode::Lines => {
                let figures = Figures {
                    done_paths,
                    total_paths: inner.total_paths,
                    done_bytes,
                    total_bytes: inner.total_bytes,
                    elapsed: inner.started.elapsed(),
                };
                eprintln!("{}", plain_line(&figures, path, nar_size, file_size));
            }
            Mode::Quiet => {}
        }
    }

    /// Stops showing progress (the caller prints the summary).
    pub fn finish(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_wins_and_a_terminal_gets_the_bar() {
        assert_eq!(Mode::choose(true, true), Mode::Quiet);
        assert_eq!(Mode::choose(true, false), Mode::Quiet);
        assert_eq!(Mode::choose(false, true), Mode::Bar);
        assert_eq!(Mode::choose(false, false), Mode::Lines);
    }

    #[test]
    fn rate_and_eta_from_what_is_done() {
        let figures = Figures {
            done_paths: 1,
            total_paths: 4,
            done_bytes: 10 << 20,
            total_bytes: 40 << 20,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(figures.rate(), Some(5.0 * 1024.0 * 1024.0));
        assert_eq!(figures.eta(), Some(Duration::from_secs(6)));
        assert_eq!(
            plain_line(&figures, "/nix/store/aaaa-x", 10 << 20, 3 << 20),
            "[1/4] uploaded /nix/store/aaaa-x (10.00 MiB → 3.00 MiB); 10.00 MiB of 40.00 MiB, 5.00 MiB/s, ETA 6 seconds"
        );
    }

    #[test]
    fn nothing_done_yet_has_no_rate() {
        let figures = Figures {
            done_paths: 0,
            total_paths: 2,
            done_bytes: 0,
            total_bytes: 100,
            elapsed: Duration::from_secs(1),
        };
        assert_eq!((figures.rate(), figures.eta()), (None, None));
        assert!(plain_line(&figures, "/nix/store/b-y", 0, 0).ends_with(", -, ETA -"));
    }
}
