//! `ferry rollback`: put an archived manifest back as the live one.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use ferry_bucket::Bucket;
use ferry_schema::layout::{MANIFEST_KEY, archive_key};
use ferry_schema::{SecretKey, sign_manifest};

use crate::cli::EXIT_FAILED;
use crate::command::publish::missing_closures;
use crate::live_manifest::{archived_generations, read, read_live, replace};
use crate::manifest_edit::{next_generation, service_changes};
use crate::manifest_write::{WriteOptions, write_manifest};
use crate::settings::{BucketArgs, KeyArgs, load_config, load_key, open_bucket};

/// Roll the live manifest back to an archived one.
///
/// Archives the current manifest, then puts the chosen archived one back as
/// `manifest.json`, re-signed with a new generation (so agents see a newer manifest), or
/// byte for byte with `--exact`. Default: one step back (the newest archive older than the
/// live manifest). Refuses (exit 1) when the chosen manifest's store paths are no longer in
/// the bucket's cache, unless `--allow-missing`. Like `push`, it fails with "the manifest changed while pushing — run
/// again" instead of overwriting a change made meanwhile.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub bucket: BucketArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The archived generation to go back to (see `ferry history`).
    #[arg(long, value_name = "GENERATION", conflicts_with = "steps")]
    pub to: Option<String>,
    /// How many archived manifests to go back.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub steps: usize,
    /// Copy the archived manifest byte for byte (its old generation and signature).
    #[arg(long)]
    pub exact: bool,
    /// Roll back even when some of its store paths are no longer in the bucket's cache
    /// (removed by `ferry gc`).
    #[arg(long)]
    pub allow_missing: bool,
}

/// Runs `ferry rollback`.
pub async fn run(args: &Args) -> Result<ExitCode> {
    let config = load_config()?;
    let key = if args.exact {
        None
    } else {
        Some(load_key(&args.key, &config)?)
    };
    let (url, bucket) = open_bucket(&args.bucket, &config).await?;
    run_with(
        args,
        &bucket,
        &url.to_string(),
        key,
        &WriteOptions::default(),
    )
    .await
}

/// `ferry rollback` on an opened bucket (`url` names it in messages); `key` is needed
/// unless `--exact`.
pub async fn run_with(
    args: &Args,
    bucket: &impl Bucket,
    url: &str,
    key: Option<SecretKey>,
    options: &WriteOptions,
) -> Result<ExitCode> {
    let Some(live) = read_live(bucket).await? else {
        bail!("{url} has no {MANIFEST_KEY}; there is nothing to roll back");
    };
    let generations = archived_generations(bucket).await?;
    let target = match &args.to {
        Some(g) => g.clone(),
        None => {
            let older: Vec<&String> = generations
                .iter()
                .filter(|g| g.as_str() < live.manifest.generation.as_str())
                .collect();
            match older.get(args.steps.saturating_sub(1)) {
                Some(g) => (*g).clone(),
                None => bail!(
                    "there are only {} archived manifests older than the live one ({}); see `ferry history`",
                    older.len(),
                    live.manifest.generation
                ),
            }
        }
    };
    let target_key = archive_key(&target);
    let Some(chosen) = read(bucket, &target_key).await? else {
        bail!(
            "no archived manifest {target_key} in {url}; see `ferry history` for the generations there are"
        );
    };
    // An old generation's closures may have been collected since: agents could not fetch them.
    let missing = missing_closures(bucket, &chosen.manifest).await?;
    if !missing.is_empty() {
        for path in &missing {
            eprintln!("not in the bucket's cache: {path}");
        }
        if !args.allow_missing {
            eprintln!(
                "not rolled back: {} store path(s) of {target} have no narinfo in {url} (collected by `ferry gc`?); upload them again with `ferry upload PATH...` (or pass --allow-missing)",
                missing.len()
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    }
    let changes = service_changes(Some(&live.manifest), &chosen.manifest);
    if args.exact {
        write_manifest(
            bucket,
            Some(&live),
            chosen.bytes.clone(),
            &format!("ferry rollback --exact --to {target}"),
            options,
        )
        .await?;
        eprintln!("rolled back to {target} byte for byte (generation {target})");
    } else {
        let key = key.context("a signing key is needed")?;
        let mut manifest = chosen.manifest.clone();
        manifest.generation = next_generation(Some(&live.manifest.generation), Utc::now())?;
        manifest.signatures = None;
        sign_manifest(&mut manifest, &key)?;
        replace(bucket, Some(&live), &manifest, "ferry rollback", options).await?;
        eprintln!(
            "rolled back to the services of {target}, published as generation {}",
            manifest.generation
        );
    }
    for line in &changes {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
