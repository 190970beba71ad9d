//! `ferry push`: upload one service's new closure and point the live manifest at it.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use ferry_bucket::Bucket;
use ferry_schema::layout::MANIFEST_KEY;
use ferry_schema::{SecretKey, sign_manifest, validate_manifest};

use crate::command::upload::{CompressionArg, prepare, print_report};
use crate::live_manifest::{read_live, replace};
use crate::manifest_edit::{next_generation, service_changes, set_service};
use crate::manifest_write::WriteOptions;
use crate::revision::git_head;
use crate::settings::{BucketArgs, ConfigFile, KeyArgs, load_config, load_key, open_bucket};
use crate::uploader::{UploadOptions, execute};

/// Deploy a new version of one service: upload its closure, then update the live manifest.
///
/// Builds the installable (or takes the store path), uploads what the bucket's cache lacks,
/// then sets the service's `storePath` and `revision` (the git commit of the working
/// directory, or `--revision`) with a new generation, signs, archives the current manifest
/// and uploads the new one. The service must already be in the live manifest; new services
/// go in with `ferry upload` + `ferry publish`.
///
/// Concurrent pushes never lose a change: the manifest is written only if it is still the
/// one read at the start (a conditional PUT, or a lease on stores like Garage that ignore
/// conditions); otherwise the push fails with "the manifest changed while pushing — run
/// again" and the closure stays uploaded, so the re-run only rewrites the manifest.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service to update.
    #[arg(value_name = "SERVICE")]
    pub service: String,
    /// Store path or installable.
    #[arg(value_name = "STORE_PATH|INSTALLABLE")]
    pub installable: String,
    #[command(flatten)]
    pub bucket: BucketArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Revision to record instead of the working directory's git commit.
    #[arg(long)]
    pub revision: Option<String>,
    /// zstd compression level (1-19; default 3).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: Option<i32>,
    /// How NARs are compressed.
    #[arg(long, value_enum, default_value_t = CompressionArg::Zstd)]
    pub compression: CompressionArg,
    /// Print the plan (paths to upload with sizes, manifest change); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print only errors.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `ferry push`.
pub async fn run(args: &Args) -> Result<ExitCode> {
    let config = load_config()?;
    let key = if args.dry_run {
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
        &config,
        &WriteOptions::default(),
    )
    .await
}

/// `ferry push` on an opened bucket (`url` names it in messages); `key: None` is a dry run.
pub async fn run_with(
    args: &Args,
    bucket: &impl Bucket,
    url: &str,
    key: Option<SecretKey>,
    config: &ConfigFile,
    options: &WriteOptions,
) -> Result<ExitCode> {
    let Some(live) = read_live(bucket).await? else {
        bail!(
            "{url} has no {MANIFEST_KEY}; upload the closure with `ferry upload {}` and create the manifest with `ferry publish MANIFEST`",
            args.installable
        );
    };
    // Check the service before building or uploading anything.
    let mut manifest = live.manifest.clone();
    set_service(&mut manifest, &args.service, &args.installable, None)?;

    let (tops, closure_len, plan) = prepare(std::slice::from_ref(&args.installable), bucket)
        .await
        .with_context(|| format!("preparing the upload to {url}"))?;
    let top = tops.first().context("no store path resolved")?.clone();
    let revision = args.revision.clone().or_else(git_head);
    let mut manifest = live.manifest.clone();
    set_service(&mut manifest, &args.service, &top, revision)?;
    manifest.generation = next_generation(Some(&live.manifest.generation), Utc::now())?;
    let problems: Vec<String> = validate_manifest(&manifest)
        .iter()
        .filter(|p| p.is_error())
        .map(ToString::to_string)
        .collect();
    if !problems.is_empty() {
        bail!(
            "the updated manifest would be invalid:\n{}",
            problems.join("\n")
        );
    }
    let changes = service_changes(Some(&live.manifest), &manifest);

    let Some(key) = key else {
        println!(
            "{closure_len} paths in the closure of {top}: {} cached, {} to upload",
            plan.cached.len(),
            plan.missing().count()
        );
        for info in plan.missing() {
            println!("  upload {} ({} bytes)", info.path, info.nar_size);
        }
        println!(
            "manifest generation {} -> {}",
            live.manifest.generation, manifest.generation
        );
        for line in &changes {
            println!("  {line}");
        }
        eprintln!("dry run: nothing written to {url}");
        return Ok(ExitCode::SUCCESS);
    };
    let upload_options = UploadOptions {
        compression: args
            .compression
            .with_zstd_level(args.zstd_level.or(config.zstd_level)),
        verbose: !args.quiet,
    };
    let report = execute(bucket, &plan, &key, &upload_options).await?;
    if !args.quiet {
        print_report(&report, bucket.requests());
    }
    sign_manifest(&mut manifest, &key)?;
    replace(
        bucket,
        Some(&live),
        &manifest,
        &format!("ferry push {}", args.service),
        options,
    )
    .await?;
    for line in &changes {
        println!("{line}");
    }
    if !args.quiet {
        eprintln!(
            "pushed `{}` as generation {} to {url}; the previous manifest is archived as manifests/manifest-{}.json ({} requests in all)",
            args.service,
            manifest.generation,
            live.manifest.generation,
            bucket.requests()
        );
    }
    Ok(ExitCode::SUCCESS)
}
