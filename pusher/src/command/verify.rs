//! `ferry verify`: checks a manifest's signature against trusted public keys.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ferry_schema::{DEFAULT_SIZE_CAP, PublicKey, validate_bytes, verify_manifest};

use crate::cli::EXIT_FAILED;

/// Check that a manifest is valid and signed by a trusted key, as the agent does.
///
/// Give the trusted public keys with `--trusted-key NAME:BASE64` (repeatable) or
/// `--trusted-key-file FILE` (repeatable; the file from `ferry keygen --public-key-file`).
///
/// Exit status: 0 when a trusted key signed it (the key is named), 1 when not (the reason
/// is printed), 2 when a file or key cannot be read.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("keys").required(true).multiple(true).args(["trusted_key", "trusted_key_file"])))]
pub struct Args {
    /// The manifest file to check.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// A trusted public key, `name:base64`.
    #[arg(long, value_name = "NAME:BASE64")]
    pub trusted_key: Vec<String>,
    /// A file holding one trusted public key.
    #[arg(long, value_name = "FILE")]
    pub trusted_key_file: Vec<PathBuf>,
}

/// Reads the keys and the manifest, then verifies.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let trusted = trusted_keys(args)?;
    let bytes = std::fs::read(&args.manifest)
        .with_context(|| format!("reading {}", args.manifest.display()))?;
    let manifest = match validate_bytes(&bytes, DEFAULT_SIZE_CAP) {
        Ok(validated) => validated.manifest,
        Err(problems) => {
            for p in &problems {
                println!("{}", super::validate::render(p));
            }
            eprintln!(
                "{}: not verified: the manifest is invalid (problems above)",
                args.manifest.display()
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };
    match verify_manifest(&manifest, &trusted) {
        Ok(name) => {
            println!(
                "{}: signed by trusted key `{name}`",
                args.manifest.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: not verified: {e}", args.manifest.display());
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

fn trusted_keys(args: &Args) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for text in &args.trusted_key {
        keys.push(
            PublicKey::parse(text)
                .with_context(|| format!("--trusted-key {}", text.escape_debug()))?,
        );
    }
    for path in &args.trusted_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading trusted key file {}", path.display()))?;
        keys.push(
            PublicKey::parse(&text)
                .with_context(|| format!("trusted key file {}", path.display()))?,
        );
    }
    Ok(keys)
}
