//! Stopping processes the bed started: SIGTERM, a grace period, then SIGKILL — by PID, and
//! only for children the bed spawned itself.

use std::process::Child;
use std::time::{Duration, Instant};

use crate::process::{cmd, run};

/// Asks `child` to stop with SIGTERM (nspawn turns it into a clean container shutdown).
pub fn request_stop(child: &Child) {
    let _ = run(&mut cmd("kill", ["-TERM", &child.id().to_string()]));
}

/// Waits up to `grace` for `child` to exit, then kills it; always reaps it.
pub fn wait_or_kill(mut child: Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
pub fn stop_child(child: Child, grace: Duration) {
    request_stop(&child);
    wait_or_kill(child, grace);
}
