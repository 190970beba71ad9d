//! `ferry diff`: service-level differences between two manifests.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ferry_bucket::AnyBucket;
use ferry_schema::Manifest;
use ferry_schema::layout::archive_key;

use crate::live_manifest::{archived_generations, parse, read, read_live};
use crate::manifest_edit::service_changes;
use crate::settings::{BucketArgs, load_config, open_bucket};

/// Show which services differ between two manifests.
///
/// Each of A and B is a local manifest file, an archived generation (see `ferry history`)
/// or `live`. Without B, A is compared with the live manifest; without either, the newest
/// archived manifest is compared with the live one. Lines: `+ service`, `- service`,
/// `~ service: old -> new`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The older side: file, generation or `live`.
    #[arg(value_name = "A")]
    pub a: Option<String>,
    /// The newer side (default `live`).
    #[arg(value_name = "B")]
    pub b: Option<String>,
    #[command(flatten)]
    pub bucket: BucketArgs,
}

async fn load(bucket: &AnyBucket, what: &str) -> Result<Manifest> {
    if what == "live" {
        return Ok(read_live(bucket)
            .await?
            .context("the bucket has no manifest.json")?
            .manifest);
    }
    if Path::new(what).is_file() {
        let bytes = std::fs::read(what).with_context(|| format!("reading {what}"))?;
        return parse(&bytes, what);
    }
    let key = archive_key(what);
    match read(bucket, &key).await? {
        Some(live) => Ok(live.manifest),
        None => bail!(
            "{what:?} is neither a file nor an archived generation ({key}); see `ferry history`"
        ),
    }
}

/// Runs `ferry diff`.
pub async fn run(args: &Args) -> Result<ExitCode> {
    let (_, bucket) = open_bucket(&args.bucket, &load_config()?).await?;
    let a = match &args.a {
        Some(a) => a.clone(),
        None => archived_generations(&bucket)
            .await?
            .into_iter()
            .next()
            .context("the bucket has no archived manifests to compare with")?,
    };
    let b = args.b.clone().unwrap_or_else(|| "live".to_owned());
    let (old, new) = (load(&bucket, &a).await?, load(&bucket, &b).await?);
    println!("{} ({a}) -> {} ({b})", old.generation, new.generation);
    let changes = service_changes(Some(&old), &new);
    if changes.is_empty() {
        println!("no service changes");
    }
    for line in changes {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
