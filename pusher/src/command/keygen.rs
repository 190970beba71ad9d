//! `ferry keygen`: makes an ed25519 signing key pair in Nix's format.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use ferry_schema::SecretKey;

use ferry_bucket::atomic_file::write as write_atomic;

/// Create a signing key pair (ed25519, Nix's `name:base64` format).
///
/// The same files work with Nix: the key signs closures (`nix store sign --key-file`) and
/// manifests (`ferry sign`), and the public key goes into the hosts' `trusted-public-keys`
/// and the agent's trusted manifest keys. Equivalent to
/// `nix-store --generate-binary-cache-key NAME SECRET PUBLIC`.
///
/// Example: `ferry keygen --name deploy.example.com-1 --secret-key-file deploy.sec
/// --public-key-file deploy.pub`
///
/// Exit status: 0 when both files are written (the public key is also printed), 2 when a
/// file already exists (without `--force`) or cannot be written.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Key name, conventionally `<domain>-<n>` (e.g. `deploy.example.com-1`); signatures
    /// carry it so hosts know which key to check with.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Where to write the secret key (mode 0600). Keep it off the hosts and out of git.
    #[arg(long, value_name = "FILE")]
    pub secret_key_file: PathBuf,
    /// Where to write the public key.
    #[arg(long, value_name = "FILE")]
    pub public_key_file: PathBuf,
    /// Overwrite existing key files (the old secret key is lost).
    #[arg(long)]
    pub force: bool,
}

/// Generates the key pair and writes both files.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if !args.force {
        for path in [&args.secret_key_file, &args.public_key_file] {
            if path.exists() {
                bail!(
                    "{} already exists; choose another file or pass --force to overwrite it",
                    path.display()
                );
            }
        }
    }
    let key =
        SecretKey::generate(&args.name).with_context(|| format!("creating key `{}`", args.name))?;
    // Like nix-store: no trailing newline, secret 0600, public 0644.
    write_atomic(&args.secret_key_file, key.to_nix_string().as_bytes(), 0o600).with_context(
        || {
            format!(
                "writing the secret key to {}",
                args.secret_key_file.display()
            )
        },
    )?;
    let public = key.public().to_nix_string();
    write_atomic(&args.public_key_file, public.as_bytes(), 0o644).with_context(|| {
        format!(
            "writing the public key to {}",
            args.public_key_file.display()
        )
    })?;
    println!("{public}");
    eprintln!(
        "wrote secret key {} (keep it private) and public key {}; trust the public key on hosts (Nix trusted-public-keys and the agent's manifest keys)",
        args.secret_key_file.display(),
        args.public_key_file.display()
    );
    Ok(ExitCode::SUCCESS)
}
