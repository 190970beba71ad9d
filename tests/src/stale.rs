//! Processes a crashed earlier bed left running. Each process the bed starts is recorded in
//! a `pid` file in its folder together with its start time (from `/proc/<pid>/stat`); the
//! next user of the slot stops a recorded PID only while it still has that start time, so a
//! reused PID is never touched, whatever the process's command line says.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::process::Signal;

use crate::stop::signal;

/// The file a started process's PID and start time are recorded in.
const PID_FILE: &str = "pid";
/// How long a stale process gets between SIGTERM and SIGKILL (nspawn shuts a container
/// down cleanly on SIGTERM, which can take a while).
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Records `pid`, a process the bed just started, in `dir`.
pub fn record_pid(dir: &Path, pid: u32) -> Result<()> {
    let start = start_time(pid).with_context(|| format!("reading the start time of PID {pid}"))?;
    let path = dir.join(PID_FILE);
    std::fs::write(&path, format!("{pid} {start}"))
        .with_context(|| format!("writing {}", path.display()))
}

/// Stops every recorded process under `work` (one level of folders) that is still the one
/// the bed started: SIGTERM, up to 30 s, then SIGKILL.
pub fn stop_recorded(work: &Path) {
    stop_recorded_within(work, STOP_GRACE);
}

fn stop_recorded_within(work: &Path, grace: Duration) {
    let Ok(entries) = std::fs::read_dir(work) else {
        return;
    };
    for entry in entries.flatten() {
        let Some((pid, start)) = std::fs::read_to_string(entry.path().join(PID_FILE))
            .ok()
            .and_then(|text| parse_record(&text))
        else {
            continue;
        };
        let ours = || start_time(pid) == Some(start);
        if !ours() {
            continue;
        }
        if let Err(err) = signal(pid, Signal::TERM) {
            eprintln!("test bed: stopping a stale process: {err:#}");
        }
        let deadline = Instant::now() + grace;
        while ours() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        // A process that ignores or blocks SIGTERM is killed.
        if ours()
            && let Err(err) = signal(pid, Signal::KILL)
        {
            eprintln!("test bed: killing a stale process: {err:#}");
        }
    }
}

/// `<pid> <start time>` as [`record_pid`] writes it. A file without a start time (from an
/// older bed) identifies nothing for sure, so it is not trusted.
fn parse_record(text: &str) -> Option<(u32, u64)> {
    let mut fields = text.split_whitespace();
    let pid = fields.next()?.parse().ok()?;
    let start = fields.next()?.parse().ok()?;
    Some((pid, start))
}

/// When `pid` started (clock ticks since boot), or `None` when no such process runs. A
/// zombie counts as gone: it has exited, and where PID 1 does not reap orphans it may stay
/// in the process table for good.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// The start time in a `/proc/<pid>/stat` line, unless the process is a zombie. The command
/// name (field 2) is in parentheses and may hold spaces and parentheses itself, so the
/// fields are counted from the last `)`: state is field 3, the start time field 22.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(22 - 4)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};

    /// How `child` ended within `wait`: `Some(signal)` when a signal ended it, `Some(0)` when
    /// it exited, `None` while it still runs.
    fn ended_by(child: &mut Child, wait: Duration) -> Option<i32> {
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.signal().unwrap_or(0));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn start_time_is_field_22_counted_after_the_command_name() {
        let stat = "1234 (we ird) name)) S 1 1234 1234 0 -1 4194560 95 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 2236416 180 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987654));
        let zombie = stat.replace(") S ", ") Z ");
        assert_eq!(parse_start_time(&zombie), None);
        assert_eq!(parse_record("1234 987654"), Some((1234, 987654)));
        assert_eq!(parse_record("1234"), None, "a PID alone identifies nothing");
    }

    #[test]
    fn recorded_processes_are_stopped_and_reused_pids_left_alone() -> Result<()> {
        let work = tempfile::tempdir()?;
        let dir = |name: &str| -> Result<std::path::PathBuf> {
            let dir = work.path().join(name);
            std::fs::create_dir_all(&dir)?;
            Ok(dir)
        };
        // A process the bed started and recorded. It takes SIGTERM's default action even
        // where this test inherited SIGTERM ignored (an ignored signal stays ignored across
        // exec, and some supervisors start processes so).
        let mut started = Command::new("env")
            .args(["--default-signal=TERM", "sleep", "300"])
            .spawn()?;
        record_pid(&dir("host0")?, started.id())?;
        // One that ignores SIGTERM, as a wedged process may: it must be killed.
        let mut stubborn = Command::new("sh")
            .args([
                "-c",
                "trap '' TERM; echo ready; while :; do sleep 0.2; done",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        if let Some(out) = stubborn.stdout.as_mut() {
            // The trap is set once it says so.
            std::io::Read::read_exact(out, &mut [0u8; 6])?;
        }
        record_pid(&dir("host1")?, stubborn.id())?;
        // A recorded PID that now belongs to another process (PID reuse): another start time.
        let mut unrelated = Command::new("sleep").arg("300").spawn()?;
        let start = start_time(unrelated.id()).context("the unrelated process's start")?;
        std::fs::write(
            dir("host2")?.join(PID_FILE),
            format!("{} {}", unrelated.id(), start + 1),
        )?;
        // A PID file of an older bed, without a start time.
        let mut unproven = Command::new("sleep").arg("300").spawn()?;
        std::fs::write(dir("host3")?.join(PID_FILE), unproven.id().to_string())?;

        stop_recorded_within(work.path(), Duration::from_secs(1));
        let outcomes = [
            ended_by(&mut started, Duration::from_secs(5)),
            ended_by(&mut stubborn, Duration::from_secs(5)),
            ended_by(&mut unrelated, Duration::ZERO),
            ended_by(&mut unproven, Duration::ZERO),
        ];
        for child in [&mut started, &mut stubborn, &mut unrelated, &mut unproven] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (term, kill) = (Signal::TERM.as_raw(), Signal::KILL.as_raw());
        assert_eq!(
            outcomes,
            [Some(term), Some(kill), None, None],
            "expected: the bed's own process stopped by SIGTERM, the one ignoring SIGTERM \
             killed, the reused PID and the unproven one left running"
        );
        Ok(())
    }
}
