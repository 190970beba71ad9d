//! Stopping processes the bed started: SIGTERM, a grace period, then SIGKILL — by PID, and
//! only for children the bed spawned itself.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::process::{cmd, run};

/// How a child the bed stopped ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It exited by itself within the grace period, with this status.
    Exited(ExitStatus),
    /// It was still running after the grace period (or could not be waited for) and was
    /// killed.
    Killed,
}

impl Ended {
    /// Whether it exited within the grace period with status 0.
    pub fn is_clean(&self) -> bool {
        matches!(self, Ended::Exited(status) if status.success())
    }
}

/// Asks `child` to stop with SIGTERM (nspawn turns it into a clean container shutdown).
pub fn request_stop(child: &Child) {
    let _ = run(&mut cmd("kill", ["-TERM", &child.id().to_string()]));
}

/// Waits up to `grace` for `child` to exit, then kills it; always reaps it.
pub fn wait_or_kill(mut child: Child, grace: Duration) -> Ended {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Ended::Exited(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ended::Killed
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
pub fn stop_child(child: Child, grace: Duration) -> Ended {
    request_stop(&child);
    wait_or_kill(child, grace)
}
