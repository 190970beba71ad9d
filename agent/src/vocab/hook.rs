//! How a hook run ended (`backend::hook` runs them, `hooks` words the tick's line).

use std::time::Duration;

/// How one hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookRun {
    /// The command ran to its end: `code` is its exit status, or `None` when a signal
    /// (`signal`) ended it.
    Exited {
        /// Exit status.
        code: Option<i32>,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        /// How long it ran.
        took: Duration,
    },
    /// The command outlived its time and was killed, with every process it started.
    Killed {
        /// The limit it outlived.
        after: Duration,
    },
    /// The command could not be started (no such program, not executable, …).
    NotStarted {
        /// What the OS said.
        reason: String,
    },
    /// The webhook answered with this HTTP status.
    Answered {
        /// The status code.
        status: u16,
        /// How long the request took.
        took: Duration,
    },
    /// The webhook could not be reached, or did not answer in time.
    Unreachable {
        /// What went wrong.
        reason: String,
    },
}
