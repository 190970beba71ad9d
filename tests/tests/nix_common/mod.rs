//! What the Nix tests share: where the repository's Nix files are and how to evaluate them
//! with the machine's real Nix (2.8, no nixpkgs).

// Each nix_*.rs test crate includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// The workspace root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    ferry_tests::module_render::repo_root()
}

/// Every `.nix` file in the repository (flake.nix, nix/, the test bed's closures, the
/// benchmarks' closures, …), sorted, so formatting covers whatever Nix anyone adds.
pub fn all_nix_files() -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect_nix_files(&repo_root(), &mut files)?;
    files.sort();
    Ok(files)
}

/// Every `.nix` file under `dir`, recursively, skipping build output and VCS folders.
pub fn collect_nix_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | ".git" | "node_modules") {
                collect_nix_files(&path, out)?;
            }
        } else if name.ends_with(".nix") {
            out.push(path);
        }
    }
    Ok(())
}

/// `nix-instantiate --eval --strict --json` of `expr` (evaluated in the repository root),
/// parsed as JSON.
pub fn eval_json(expr: &str) -> Result<serde_json::Value> {
    ferry_tests::module_render::eval_json(expr, &[])
}

/// JSON to TOML as `pkgs.formats.toml` renders it; see
/// [`ferry_tests::module_render::json_to_toml`].
pub fn json_to_toml(value: &serde_json::Value, at: &str) -> Result<toml::Value> {
    ferry_tests::module_render::json_to_toml(value, at)
}
