//! `ferry history`: the live and archived manifests, newest first, with what changed.

use std::process::ExitCode;

use anyhow::Result;
use ferry_schema::layout::archive_key;

use crate::live_manifest::{Live, read, read_live};
use crate::manifest_edit::service_changes;
use crate::settings::{BucketArgs, load_config, open_bucket};

/// List manifests newest first: generation, revisions, and the services that changed
/// compared with the one before.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// Show at most this many entries.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// Runs `ferry history`.
pub async fn run(args: &Args) -> Result<ExitCode> {
    let (_, bucket) = open_bucket(&args.bucket, &load_config()?).await?;
    let mut entries: Vec<(String, Live)> = Vec::new();
    if let Some(live) = read_live(&bucket).await? {
        entries.push(("live".to_owned(), live));
    }
    for generation in crate::live_manifest::archived_generations(&bucket).await? {
        // The live manifest's own archive (after an --exact rollback) is listed once.
        if entries
            .iter()
            .any(|(_, l)| l.manifest.generation == generation)
        {
            continue;
        }
        if entries.len() > args.limit {
            break;
        }
        let key = archive_key(&generation);
        if let Some(m) = read(&bucket, &key).await? {
            entries.push((key, m));
        }
    }
    for (i, (source, live)) in entries.iter().enumerate().take(args.limit) {
        let m = &live.manifest;
        let revisions: Vec<String> = m
            .services
            .iter()
            .filter_map(|s| s.revision.as_ref().map(|r| format!("{}@{r}", s.name)))
            .collect();
        println!(
            "{}  {}  {} services{}",
            m.generation,
            source,
            m.services.len(),
            if revisions.is_empty() {
                String::new()
            } else {
                format!("  {}", revisions.join(" "))
            }
        );
        let older = entries.get(i + 1).map(|(_, l)| &l.manifest);
        for line in service_changes(older, m) {
            println!("    {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
