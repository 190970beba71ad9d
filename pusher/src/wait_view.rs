//! What `--wait` shows while it follows the hosts: on a terminal, one live line per host
//! (a spinner, the host, where it stands), redrawn in place as its verdict changes; when
//! stderr is not a terminal (logs, CI), a plain line `host: …` per change. Notes (a status
//! store that cannot be read, the timeout) print above the live lines without garbling them.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The hosts' lines as shown so far.
pub struct WaitView {
    shown: BTreeMap<String, String>,
    live: Option<Live>,
}

struct Live {
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
}

impl WaitView {
    /// Live lines when stderr is a terminal, plain lines otherwise.
    pub fn for_stderr() -> WaitView {
        WaitView::new(
            std::io::stderr()
                .is_terminal()
                .then(ProgressDrawTarget::stderr),
        )
    }

    /// Live lines drawn to `target`, or plain lines on stderr with `None`.
    pub fn new(target: Option<ProgressDrawTarget>) -> WaitView {
        WaitView {
            shown: BTreeMap::new(),
            live: target.map(|t| Live {
                multi: MultiProgress::with_draw_target(t),
                bars: BTreeMap::new(),
            }),
        }
    }

    /// Shows `line` for `host` when it is not what the host shows already; whether it was
    /// new.
    pub fn show(&mut self, host: &str, line: &str) -> bool {
        if self.shown.get(host).map(String::as_str) == Some(line) {
            return false;
        }
        self.shown.insert(host.to_owned(), line.to_owned());
        match &mut self.live {
            Some(live) => {
                let bar = live.bars.entry(host.to_owned()).or_insert_with(|| {
                    let bar = live.multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix}: {wide_msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(host.to_owned());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                bar.set_message(line.to_owned());
            }
            None => eprintln!("{host}: {line}"),
        }
        true
    }

    /// A note of the wait's own (not a host's), above the live lines.
    pub fn note(&self, text: &str) {
        match &self.live {
            Some(live) => {
                if live.multi.println(text).is_err() {
                    eprintln!("{text}");
                }
            }
            None => eprintln!("{text}"),
        }
    }

    /// What each host shows now.
    pub fn lines(&self) -> &BTreeMap<String, String> {
        &self.shown
    }

    /// Leaves the live lines as they last were (the spinners stop); nothing for plain lines.
    pub fn finish(&self) {
        if let Some(live) = &self.live {
            for bar in live.bars.values() {
                bar.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_line_is_shown_once_per_change_live_or_plain() {
        for target in [Some(ProgressDrawTarget::hidden()), None] {
            let live = target.is_some();
            let mut view = WaitView::new(target);
            assert!(view.show("host-a", "waiting (last report 2025-01-01)"));
            assert!(!view.show("host-a", "waiting (last report 2025-01-01)"));
            assert!(view.show("host-b", "waiting"));
            assert!(view.show("host-a", "converged"));
            view.note("status store s3://x: unreachable (trying again)");
            view.finish();
            let now: Vec<(&str, &str)> = view
                .lines()
                .iter()
                .map(|(h, l)| (h.as_str(), l.as_str()))
                .collect();
            assert_eq!(
                now,
                [("host-a", "converged"), ("host-b", "waiting")],
                "live: {live}"
            );
            if let Some(l) = &view.live {
                assert_eq!(l.bars["host-a"].message(), "converged");
                assert!(l.bars["host-a"].is_finished());
            }
        }
    }
}
