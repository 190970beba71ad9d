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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    fn alive(child: &mut Child) -> bool {
        matches!(child.try_wait(), Ok(None))
    }

    #[test]
    fn only_recorded_processes_that_still_name_their_folder_are_stopped() -> Result<()> {
        let work = tempfile::tempdir()?;
        let (ours, other) = (work.path().join("host0"), work.path().join("host1"));
        std::fs::create_dir_all(&ours)?;
        std::fs::create_dir_all(&other)?;
        // A process the bed started names its folder on its command line ($0 here).
        let mut started = Command::new("sh")
            .arg("-c")
            .arg("sleep 30")
            .arg(&ours)
            .spawn()?;
        // A recorded PID that now belongs to something else (PID reuse) does not.
        let mut unrelated = Command::new("sleep").arg("30").spawn()?;
        record_pid(&ours, started.id())?;
        record_pid(&other, unrelated.id())?;

        stop_recorded(work.path());
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(&mut started) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (started_alive, unrelated_alive) = (alive(&mut started), alive(&mut unrelated));
        let _ = unrelated.kill();
        let _ = unrelated.wait();
        let _ = started.kill();
        let _ = started.wait();
        assert!(
            !started_alive,
            "the bed's own stale process was left running"
        );
        assert!(
            unrelated_alive,
            "a process the bed did not start was stopped"
        );
        Ok(())
    }
}
