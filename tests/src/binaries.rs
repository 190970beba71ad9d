//! Finding the workspace's own binaries (ferry, ferry-agent, ferry-testsvc) from a test or
//! from a binary of this crate. Cargo puts binaries in `target/<profile>/` and test
//! executables in `target/<profile>/deps/` (examples in `examples/`), so both places are
//! looked at.
//!
//! Tests use [`built_binary`], which has cargo build the binary first: cargo builds another
//! package's binaries only for that package's own tests, so a test run alone would
//! otherwise run whatever an earlier build left in `target/` (an old agent, and a test that
//! passes or fails for the wrong code). The demo and the benchmarks' scripts build
//! everything before they start and use [`workspace_binary`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The path of the workspace binary `name` built by cargo beside the running executable.
/// The environment variable `override_var`, when set, names a prebuilt one instead.
pub fn workspace_binary(name: &str, override_var: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(override_var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("finding the running executable's path")?;
    let dir = exe
        .parent()
        .context("the running executable has no parent folder")?;
    let candidates = [Some(dir), dir.parent()];
    for candidate in candidates.into_iter().flatten().map(|d| d.join(name)) {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} is missing beside {}: build it first (`cargo build --workspace --bins`; \
         scripts/test.sh and scripts/demo.sh do) or set {override_var}",
        display_dir(dir)
    )
}

/// Builds the workspace binary `name` with cargo, in the profile and target folder the
/// running executable was built in, and returns its path, so a test never runs a stale
/// binary. The environment variable `override_var`, when set, names a prebuilt one instead
/// (e.g. a release build for measurements), and nothing is built.
pub fn built_binary(name: &str, override_var: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(override_var) {
        return Ok(PathBuf::from(path));
    }
    let package = package_of(name)?;
    let exe = std::env::current_exe().context("finding the running executable's path")?;
    let profile_dir = profile_dir(&exe)?;
    let (target_dir, profile) = match (profile_dir.parent(), profile_dir.file_name()) {
        (Some(target), Some(profile)) => (target, profile.to_string_lossy()),
        _ => bail!("{} is not inside a cargo target folder", exe.display()),
    };
    // Cargo's folder `debug` is its profile `dev`.
    let profile = if profile == "debug" {
        "dev".into()
    } else {
        profile
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args(["build", "-q", "--locked", "--profile", &profile])
        .args(["-p", package, "--bin", name])
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .with_context(|| format!("running cargo build -p {package} --bin {name}"))?;
    if !status.success() {
        bail!("cargo build -p {package} --bin {name} failed ({status})");
    }
    let built = profile_dir.join(name);
    if !built.is_file() {
        bail!("cargo built {name}, yet {} is missing", built.display());
    }
    Ok(built)
}

/// The package whose binary `name` is.
fn package_of(name: &str) -> Result<&'static str> {
    Ok(match name {
        "ferry" => "ferry-pusher",
        "ferry-agent" => "ferry-agent",
        "ferry-testsvc" | "ferry-demo" => "ferry-tests",
        other => bail!("{other} is not one of the workspace's binaries"),
    })
}

/// `target/<profile>` of an executable cargo built: a test or example sits one folder
/// below it (`deps/`, `examples/`), a binary in it.
fn profile_dir(exe: &Path) -> Result<&Path> {
    let dir = exe
        .parent()
        .with_context(|| format!("{} has no parent folder", exe.display()))?;
    let below = dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples");
    if below {
        return dir
            .parent()
            .with_context(|| format!("{} has no parent folder", dir.display()));
    }
    Ok(dir)
}

fn display_dir(dir: &Path) -> String {
    dir.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_folders_of_tests_examples_and_binaries() -> Result<()> {
        for exe in [
            "/w/target/debug/deps/agent_bed-0123",
            "/w/target/debug/ferry-demo",
        ] {
            assert_eq!(profile_dir(Path::new(exe))?, Path::new("/w/target/debug"));
        }
        assert_eq!(
            profile_dir(Path::new("/w/target/release/examples/push"))?,
            Path::new("/w/target/release")
        );
        assert_eq!(package_of("ferry")?, "ferry-pusher");
        assert!(package_of("garage").is_err());
        Ok(())
    }
}
