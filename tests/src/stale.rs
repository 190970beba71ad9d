//! Processes a crashed earlier bed left running. Each process the bed starts is recorded in
//! a `pid` file in its folder; the next user of the slot stops a recorded PID only if its
//! command line still names that folder, so a reused PID is never touched.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::process::{cmd, run};

/// The file a started process's PID is recorded in.
const PID_FILE: &str = "pid";

/// Records `pid` as started by the bed in `dir`.
pub fn record_pid(dir: &Path, pid: u32) -> Result<()> {
    let path = dir.join(PID_FILE);
    std::fs::write(&path, pid.to_string()).with_context(|| format!("writing {}", path.display()))
}

/// Stops every recorded process under `work` (one level of folders) that is still the one
/// the bed started: SIGTERM, up to 30 s, then SIGKILL.
pub fn stop_recorded(work: &Path) {
    let Ok(entries) = std::fs::read_dir(work) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(pid) = std::fs::read_to_string(dir.join(PID_FILE))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if !still_ours(pid, &dir) {
            continue;
        }
        let _ = run(&mut cmd("kill", ["-TERM", &pid.to_string()]));
        let deadline = Instant::now() + Duration::from_secs(30);
        while still_ours(pid, &dir) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if still_ours(pid, &dir) {
            let _ = run(&mut cmd("kill", ["-KILL", &pid.to_string()]));
        }
    }
}

/// Whether `pid` runs and its command line names `dir`.
fn still_ours(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    cmdline.contains(&*dir.to_string_lossy())
}
