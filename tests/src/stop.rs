//! Stopping processes the bed started: SIGTERM, a grace period, then SIGKILL — by PID, and
//! only for children the bed spawned itself. Signals are sent with kill(2) directly: an
//! external `kill` program may be missing (procps is not in a minimal Debian), and a failed
//! stop must never pass unnoticed.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::process::{Pid, Signal, kill_process};

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

/// Sends `signal` to process `pid`. A process that is already gone is not an error.
pub fn signal(pid: u32, signal: Signal) -> Result<()> {
    let raw = i32::try_from(pid).with_context(|| format!("PID {pid} is out of range"))?;
    let pid = Pid::from_raw(raw).with_context(|| format!("PID {raw} is not a process"))?;
    match kill_process(pid, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(err) => Err(err).with_context(|| format!("sending {signal:?} to PID {raw}")),
    }
}

/// Asks `child` to stop with SIGTERM (nspawn turns it into a clean container shutdown).
pub fn request_stop(child: &Child) {
    if let Err(err) = signal(child.id(), Signal::TERM) {
        eprintln!("test bed: {err:#}");
    }
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
