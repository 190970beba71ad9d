//! A test process that dies without tearing its bed down leaves processes, mounts and
//! namespaces; the next bed in that slot clears them (stopping only PIDs that bed started).

use std::process::Command;

use ferry_tests::{Bed, BedOptions};

const CHILD_ENV: &str = "FERRY_BED_CRASH_CHILD";

/// In the child: start a bed, print its slot and PIDs, and die without unwinding.
fn crash_with_a_running_bed() -> anyhow::Result<()> {
    let bed = Bed::start(BedOptions {
        hosts: 1,
        ..Default::default()
    })?;
    let pids: Vec<String> = bed.footprint().pids.iter().map(u32::to_string).collect();
    println!("slot={} pids={}", bed.names().slot(), pids.join(","));
    std::process::abort();
}

#[test]
fn next_bed_clears_what_a_crashed_bed_left() -> anyhow::Result<()> {
    if std::env::var_os(CHILD_ENV).is_some() {
        return crash_with_a_running_bed();
    }
    let out = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "next_bed_clears_what_a_crashed_bed_left",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|line| line.starts_with("slot="))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the child printed no slot: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let (slot, pids) = line["slot=".len()..]
        .split_once(" pids=")
        .ok_or_else(|| anyhow::anyhow!("bad child line {line}"))?;
    let pids: Vec<u32> = pids
        .split(',')
        .map(|pid| {
            pid.parse()
                .map_err(|e| anyhow::anyhow!("bad PID {pid:?} in {line:?}: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    assert!(!out.status.success(), "the child was meant to abort");
    // Garage and the host's nspawn at least: an empty list would make the checks below
    // hold for nothing.
    assert!(pids.len() >= 2, "the crashed bed recorded PIDs {pids:?}");
    for pid in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} of the crashed bed was gone before the next bed started"
        );
    }

    let bed = Bed::start(BedOptions {
        hosts: 1,
        ..Default::default()
    })?;
    assert_eq!(
        bed.names().slot().to_string(),
        slot,
        "the new bed took another slot"
    );
    for pid in &pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "process {pid} of the crashed bed still runs"
        );
    }
    assert_eq!(bed.host(0).sh_ok("hostname")?.trim(), bed.host(0).name());
    assert_eq!(bed.tear_down()?, Vec::<String>::new());
    Ok(())
}
