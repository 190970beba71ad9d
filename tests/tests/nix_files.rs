//! Every Nix file in the repository parses with the machine's Nix and is formatted the way
//! alejandra formats it.

mod nix_common;

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Rewrite unformatted files instead of failing: `FERRY_NIX_FMT=write cargo test -p
/// ferry-tests --test nix_files`. crates.io carries alejandra only as a library, so this
/// test is also the project's formatter.
const WRITE_VAR: &str = "FERRY_NIX_FMT";

#[test]
fn every_nix_file_parses() -> Result<()> {
    let files = nix_common::all_nix_files()?;
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
fn every_nix_file_is_formatted_by_alejandra() -> Result<()> {
    let write = std::env::var(WRITE_VAR).is_ok_and(|v| v == "write");
    let files = nix_common::all_nix_files()?;
    // The test bed's closures and the module at least: a walk that misses tests/ or nix/
    // would pass vacuously.
    for must in ["tests/src/closures.nix", "nix/module.nix", "flake.nix"] {
        assert!(
            files.iter().any(|f| f.ends_with(must)),
            "{must} not among the checked files: {files:?}"
        );
    }
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
