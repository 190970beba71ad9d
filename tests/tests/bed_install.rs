//! The installer is idempotent: on a prepared machine a re-run installs nothing, rebuilds
//! nothing, keeps the cached root filesystem and takes seconds.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// What "takes seconds" means here, with room for a busy CI machine.
const WARM_LIMIT: Duration = Duration::from_secs(20);
/// The link the installer points at the current root filesystem.
const ROOTFS_LINK: &str = "/var/cache/ferry-testbed/rootfs";

fn install() -> anyhow::Result<(String, Duration)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bed/install.sh");
    let started = Instant::now();
    let out = Command::new(&script).output()?;
    let took = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "{} failed:\n{text}", script.display());
    Ok((text, took))
}

#[test]
fn a_rerun_on_a_prepared_machine_changes_nothing_and_takes_seconds() -> anyhow::Result<()> {
    // The first run prepares the machine if it is not yet (minutes on a fresh one).
    install()?;
    let link_before = std::fs::read_link(ROOTFS_LINK)?;
    let (text, took) = install()?;
    assert!(took < WARM_LIMIT, "a warm re-run took {took:?}:\n{text}");
    for present in [
        "Debian packages present",
        "garage present",
        "container root filesystem present",
    ] {
        assert!(text.contains(present), "no {present:?} in:\n{text}");
    }
    for work in ["installing", "building", "removing"] {
        assert!(!text.contains(work), "a warm re-run was {work}:\n{text}");
    }
    assert_eq!(std::fs::read_link(ROOTFS_LINK)?, link_before);
    Ok(())
}
