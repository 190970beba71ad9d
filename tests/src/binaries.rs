//! Finding the workspace's own binaries (ferry, ferry-agent, ferry-testsvc) from a test or
//! from a binary of this crate. Cargo puts binaries in `target/<profile>/` and test
//! executables in `target/<profile>/deps/`, so both places are looked at.

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

fn display_dir(dir: &Path) -> String {
    dir.display().to_string()
}
