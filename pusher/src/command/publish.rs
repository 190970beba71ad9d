//! `ferry publish`: make a manifest file the live manifest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Utc;
use ferry_bucket::Bucket;
use ferry_schema::layout::narinfo_key;
use ferry_schema::{DEFAULT_SIZE_CAP, Manifest, SecretKey, sign_manifest, validate_bytes};

use crate::cli::EXIT_FAILED;
use crate::live_manifest::{read_live, replace};
use crate::manifest_edit::{is_later, next_generation, service_changes, store_paths};
use crate::manifest_write::WriteOptions;
use crate::settings::{BucketArgs, KeyArgs, load_config, load_key, open_bucket};

/// Publish a manifest file as the bucket's live manifest.
///
/// Validates it, checks that every store path it names has its narinfo in the bucket
/// (upload closures first with `ferry upload`), signs it, archives the current
/// `manifest.json` under `manifests/` and uploads the new one. A generation that is not
/// later than the live one is replaced by the current time. If another ferry changes the
/// live manifest meanwhile, nothing is written and it fails with "the manifest changed while
/// pushing — run again".
///
/// Exit status: 0 when published, 1 when the manifest is invalid or closures are missing,
/// 2 on other trouble.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manifest file.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    #[command(flatten)]
    pub bucket: BucketArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Publish even when some store paths are not in the bucket's cache.
    #[arg(long)]
    pub allow_missing: bool,
    /// Print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Store paths of `m` whose narinfo is not in the bucket.
pub async fn missing_closures(bucket: &impl Bucket, m: &Manifest) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for path in store_paths(m) {
        let Some(key) = narinfo_key(&path) else {
            missing.push(path);
            continue;
        };
        if !bucket
            .exists(&key)
            .await
            .with_context(|| format!("checking {key}"))?
        {
            missing.push(path);
        }
    }
    Ok(missing)
}

/// Runs `ferry publish`.
pub async fn run(args: &Args) -> Result<ExitCode> {
    let config = load_config()?;
    let bytes = std::fs::read(&args.manifest)
        .with_context(|| format!("reading {}", args.manifest.display()))?;
    let manifest = match validate_bytes(&bytes, DEFAULT_SIZE_CAP) {
        Ok(v) => v.manifest,
        Err(problems) => {
            for p in &problems {
                println!("{p}");
            }
            eprintln!(
                "{}: not published: the manifest is invalid; fix the problems above",
                args.manifest.display()
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };
    let key = if args.dry_run {
        None
    } else {
        Some(load_key(&args.key, &config)?)
    };
    let (url, bucket) = open_bucket(&args.bucket, &config).await?;
    run_with(
        args,
        manifest,
        &bucket,
        &url.to_string(),
        key,
        &WriteOptions::default(),
    )
    .await
}

/// `ferry publish` of the validated `manifest` (read from `args.manifest`) on an opened
/// bucket (`url` names it in messages); `key: None` is a dry run.
pub async fn run_with(
    args: &Args,
    mut manifest: Manifest,
    bucket: &impl Bucket,
    url: &str,
    key: Option<SecretKey>,
    options: &WriteOptions,
) -> Result<ExitCode> {
    let missing = missing_closures(bucket, &manifest).await?;
    if !missing.is_empty() {
        for path in &missing {
            eprintln!("not in the bucket's cache: {path}");
        }
        if !args.allow_missing {
            eprintln!(
                "not published: {} store path(s) have no narinfo in {url}; upload them with `ferry upload PATH...` (or pass --allow-missing)",
                missing.len()
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    }
    let live = read_live(bucket).await?;
    if let Some(prev) = &live
        && !is_later(&manifest.generation, &prev.manifest.generation)?
    {
        let fresh = next_generation(Some(&prev.manifest.generation), Utc::now())?;
        eprintln!(
            "generation {} is not later than the live {}; publishing as {fresh}",
            manifest.generation, prev.manifest.generation
        );
        manifest.generation = fresh;
    }
    let changes = service_changes(live.as_ref().map(|l| &l.manifest), &manifest);
    for line in &changes {
        println!("{line}");
    }
    let Some(key) = key else {
        eprintln!("dry run: nothing written to {url}");
        return Ok(ExitCode::SUCCESS);
    };
    sign_manifest(&mut manifest, &key)?;
    replace(
        bucket,
        live.as_ref(),
        &manifest,
        &format!("ferry publish {}", args.manifest.display()),
        options,
    )
    .await?;
    eprintln!(
        "published generation {} to {url} ({} change(s), signed with `{}`)",
        manifest.generation,
        changes.len(),
        key.name()
    );
    Ok(ExitCode::SUCCESS)
}
