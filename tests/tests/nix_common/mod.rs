//! What the Nix tests share: where the repository's Nix files are and how to evaluate them
//! with the machine's real Nix (2.8, no nixpkgs).

// Each nix_*.rs test crate includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// The workspace root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
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
    let output = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", expr])
        .current_dir(repo_root())
        .output()
        .context("running nix-instantiate (install Nix with tests/bed/install.sh)")?;
    if !output.status.success() {
        bail!(
            "nix-instantiate --eval failed for {expr}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("nix-instantiate printed no JSON for {expr}"))
}

/// JSON (what `builtins.toJSON` gives `pkgs.formats.toml`) to a TOML value, with the same
/// refusals: TOML has no null and no integers beyond i64.
pub fn json_to_toml(value: &serde_json::Value, at: &str) -> Result<toml::Value> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => bail!("{at}: null cannot be written to TOML"),
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) if !n.is_u64() => toml::Value::Float(f),
            _ => bail!("{at}: {n} does not fit a TOML integer"),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(items) => toml::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| json_to_toml(v, &format!("{at}[{i}]")))
                .collect::<Result<_>>()?,
        ),
        J::Object(map) => toml::Value::Table(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), json_to_toml(v, &format!("{at}.{k}"))?)))
                .collect::<Result<_>>()?,
        ),
    })
}
