//! `ferry sign`: adds a signature to a manifest file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ferry_schema::{DEFAULT_SIZE_CAP, sign_manifest, validate_bytes};

use crate::cli::EXIT_FAILED;
use crate::settings::{KeyArgs, load_config, load_key};
use ferry_bucket::atomic_file::write as write_atomic;

/// Sign a manifest with a secret key from `ferry keygen` (or `nix-store
/// --generate-binary-cache-key`).
///
/// The signature covers the manifest's canonical JSON (RFC 8785) without its `signatures`
/// field; a signature by the same key name is replaced, others are kept. The manifest must
/// be valid (see `ferry validate`). The file is rewritten in place (pretty-printed) unless
/// `--out` is given.
///
/// Exit status: 0 when signed, 1 when the manifest is invalid, 2 on other trouble.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manifest file to sign.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// The signing key.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Write the signed manifest here instead of replacing MANIFEST.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Validates, signs and writes the manifest.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.manifest)
        .with_context(|| format!("reading {}", args.manifest.display()))?;
    let mut manifest = match validate_bytes(&bytes, DEFAULT_SIZE_CAP) {
        Ok(validated) => validated.manifest,
        Err(problems) => {
            for p in &problems {
                println!("{}", super::validate::render(p));
            }
            eprintln!(
                "{}: not signed: the manifest is invalid; fix the problems above (`ferry validate` lists them too)",
                args.manifest.display()
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };
    let key = load_key(&args.key, &load_config()?)?;
    sign_manifest(&mut manifest, &key)?;
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    let out = args.out.as_ref().unwrap_or(&args.manifest);
    write_atomic(out, text.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("{}: signed with key `{}`", out.display(), key.name());
    Ok(ExitCode::SUCCESS)
}
