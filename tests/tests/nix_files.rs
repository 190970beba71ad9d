//! Every Nix file parses with the machine's Nix, and the Nix side (flake.nix, nix/) is
//! formatted the way alejandra formats it.

mod nix_common;

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Rewrite unformatted files instead of failing: `FERRY_NIX_FMT=write cargo test -p
/// ferry-tests --test nix_files`. crates.io carries alejandra only as a library, so this
/// test is also the project's formatter.
const WRITE_VAR: &str = "FERRY_NIX_FMT";

#[test]
fn every_nix_file_parses() -> Result<()> {
    let mut files = Vec::new();
    nix_common::collect_nix_files(&nix_common::repo_root(), &mut files)?;
    // flake.nix, package, module, defaults, settings mapping, VM test at least.
    assert!(files.len() >= 6, "too few .nix files found: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let output = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(file)
            .output()
            .context("running nix-instantiate (install Nix with tests/bed/install.sh)")?;
        if !output.status.success() {
            failures.push(format!(
                "{}: {}",
                file.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "Nix files that do not parse:\n{}",
        failures.join("\n")
    );
    Ok(())
}

#[test]
fn nix_side_is_formatted_by_alejandra() -> Result<()> {
    let write = std::env::var(WRITE_VAR).is_ok_and(|v| v == "write");
    let files = nix_common::nix_side_files()?;
    let mut unformatted = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let (status, formatted) =
            alejandra::format::in_memory(file.display().to_string(), text.clone());
        if let alejandra::format::Status::Error(e) = status {
            bail!("alejandra cannot format {}: {e}", file.display());
        }
        if formatted != text {
            if write {
                std::fs::write(file, formatted)
                    .with_context(|| format!("writing {}", file.display()))?;
            } else {
                unformatted.push(file.display().to_string());
            }
        }
    }
    assert!(
        unformatted.is_empty(),
        "not formatted by alejandra:\n{}\nformat them with `{WRITE_VAR}=write cargo test -p ferry-tests --test nix_files`",
        unformatted.join("\n")
    );
    Ok(())
}

#[test]
fn formatter_check_catches_a_badly_formatted_file() {
    let (status, formatted) =
        alejandra::format::in_memory("t.nix".into(), "{a=1;b   =  [1 2];}\n".into());
    assert!(matches!(status, alejandra::format::Status::Changed(true)));
    assert_eq!(formatted, "{\n  a = 1;\n  b = [1 2];\n}\n");
}
