//! A bed that cannot start says what is missing instead of skipping: no root filesystem,
//! no root, no garage. The last two run this test binary again in a child process (as
//! `nobody`, or with a PATH and HOME where no garage is), so the test process itself and
//! other tests running beside it keep their own user and environment.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use ferry_tests::{Bed, BedOptions};

/// Set in the child: which bed start to attempt there.
const CHILD_ENV: &str = "FERRY_BED_PREFLIGHT_CHILD";

#[test]
fn missing_root_filesystem_names_the_installer() {
    let options = BedOptions {
        hosts: 1,
        rootfs: Some("/nonexistent/ferry-rootfs".into()),
        ..Default::default()
    };
    let err = match Bed::start(options) {
        Ok(_) => panic!("a bed started without a root filesystem"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("/nonexistent/ferry-rootfs"), "{err}");
    assert!(err.contains("tests/bed/install.sh"), "{err}");
}

/// In the child: start a bed and print the error it fails with; a bed that starts is a
/// failure of the parent's test (it prints no `error=` line).
fn start_and_report() -> anyhow::Result<()> {
    match Bed::start(BedOptions {
        hosts: 1,
        ..Default::default()
    }) {
        // The harness prints `test <name> ... ` without a line break first.
        Ok(_) => println!("\nstarted"),
        Err(err) => println!("\nerror={err:#}"),
    }
    Ok(())
}

/// Runs `test` of the test binary `exe` in a child made by `command`, and returns the error
/// line the child's bed start printed.
fn child_error(mut command: Command, exe: &Path, test: &str) -> anyhow::Result<String> {
    let out = command
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout
        .lines()
        .find_map(|line| line.split_once("error=").map(|(_, error)| error))
    {
        Some(error) => Ok(error.to_string()),
        None => anyhow::bail!(
            "the child's bed did not fail as expected:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn without_root_the_bed_fails_saying_it_needs_root() -> anyhow::Result<()> {
    if std::env::var_os(CHILD_ENV).is_some() {
        return start_and_report();
    }
    // nobody may not reach this binary where cargo built it (a checkout under /root, say):
    // it runs from a world-readable folder of its own.
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let exe = dir.path().join("bed_preflight");
    let built = std::env::current_exe()?;
    if std::fs::hard_link(&built, &exe).is_err() {
        std::fs::copy(&built, &exe)?;
    }
    // setpriv (util-linux) drops to nobody for the child only.
    let mut setpriv = Command::new("setpriv");
    setpriv
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .current_dir(dir.path());
    let error = child_error(
        setpriv,
        &exe,
        "without_root_the_bed_fails_saying_it_needs_root",
    )?;
    assert!(error.contains("needs root"), "{error}");
    assert!(error.contains("scripts/test.sh"), "{error}");
    Ok(())
}

#[test]
fn without_garage_the_bed_fails_naming_it_and_the_installer() -> anyhow::Result<()> {
    if std::env::var_os(CHILD_ENV).is_some() {
        return start_and_report();
    }
    // No ~/.cargo/bin on PATH and a HOME without one: garage is nowhere the bed looks.
    let home = tempfile::tempdir()?;
    let mut env = Command::new("env");
    env.args([
        "-i",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ])
    // `env -i` clears what Command::env sets: the child marker goes on its line too.
    .arg(format!("{CHILD_ENV}=1"))
    .arg(format!("HOME={}", home.path().display()))
    .arg(format!(
        "CARGO_HOME={}",
        home.path().join("cargo").display()
    ));
    let error = child_error(
        env,
        &std::env::current_exe()?,
        "without_garage_the_bed_fails_naming_it_and_the_installer",
    )?;
    assert!(error.contains("garage is not installed"), "{error}");
    assert!(error.contains("tests/bed/install.sh"), "{error}");
    Ok(())
}
