//! `ferry-agent render --manifest FILE --host HOST --out DIR`: write the unit files the agent
//! would install for HOST. Validates the manifest but applies no host policy; needs no config.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use ferry_agent::render::unit::{render, unit_file};
use ferry_bucket::atomic_file;

/// Arguments of `render`.
#[derive(clap::Args)]
pub struct Args {
    /// The manifest file.
    #[arg(long)]
    manifest: PathBuf,
    /// Render the services of this host.
    #[arg(long)]
    host: String,
    /// Directory to write `ferry-<service>.service` files to (created if missing).
    #[arg(long)]
    out: PathBuf,
}

/// Write the units.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.manifest)
        .with_context(|| format!("reading {}", args.manifest.display()))?;
    let validated = match ferry_schema::validate_bytes(&bytes, ferry_schema::DEFAULT_SIZE_CAP) {
        Ok(v) => v,
        Err(problems) => {
            for p in &problems {
                eprintln!("{}: {p}", args.manifest.display());
            }
            bail!(
                "{} is not a valid manifest ({} problems)",
                args.manifest.display(),
                problems.len()
            );
        }
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut n = 0;
    for s in validated
        .manifest
        .services
        .iter()
        .filter(|s| s.hosts.contains(&args.host))
    {
        let path = args.out.join(unit_file(s));
        atomic_file::write(&path, render(s).as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
        n += 1;
    }
    if n == 0 {
        bail!(
            "no service in {} lists host {:?}",
            args.manifest.display(),
            args.host
        );
    }
    Ok(ExitCode::SUCCESS)
}
