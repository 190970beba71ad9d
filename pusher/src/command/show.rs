//! `ferry show`: print the live manifest.

use std::process::ExitCode;

use anyhow::Result;
use ferry_schema::layout::MANIFEST_KEY;

use crate::cli::EXIT_FAILED;
use crate::live_manifest::read_live;
use crate::settings::{BucketArgs, load_config, open_bucket};

/// Print the live manifest (`manifest.json`) exactly as stored.
///
/// Exit status: 0 when printed, 1 when the bucket has no manifest, 2 on other trouble.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub bucket: BucketArgs,
}

/// Runs `ferry show`.
pub async fn run(args: &Args) -> Result<ExitCode> {
    let (url, bucket) = open_bucket(&args.bucket, &load_config()?).await?;
    let Some(live) = read_live(&bucket).await? else {
        eprintln!("{url} has no {MANIFEST_KEY} yet; create one with `ferry publish MANIFEST`");
        return Ok(ExitCode::from(EXIT_FAILED));
    };
    print!("{}", String::from_utf8_lossy(&live.bytes));
    let m = &live.manifest;
    eprintln!(
        "generation {}, {} services, signed by: {}",
        m.generation,
        m.services.len(),
        m.signatures
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s.split_once(':').map(|(k, _)| k))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
