//! `ferry push`: upload one service's new closure and point the live manifest at it.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use ferry_bucket::Bucket;
use ferry_schema::layout::MANIFEST_KEY;
use ferry_schema::{SecretKey, sign_manifest, validate_manifest};

use crate::cli::EXIT_FAILED;
use crate::command::upload::{CompressionArg, prepare, print_report};
use crate::command::writing::Writing;
use crate::fleet_wait::WaitArgs;
use crate::live_manifest::{parse, read_live, to_bytes};
use crate::manifest_edit::{next_generation, reapply_push, service_changes, set_service};
use crate::manifest_trust::{Trusted, forced_diff, newest_trusted, refusal};
use crate::manifest_write::{Planned, WriteError, WriteOptions, write_manifest};
use crate::revision::git_head;
use crate::settings::{BucketArgs, ConfigFile, KeyArgs};
use crate::uploader::{UploadOptions, execute};

/// How often a push uploads again what `ferry gc` deleted while it was under way.
const REUPLOADS: u32 = 2;

/// Deploy a new version of one service: upload its closure, then update the live manifest.
///
/// Builds the installable (or takes the store path), uploads what the bucket's cache lacks,
/// then sets the service's `storePath` and `revision` (the git commit of the working
/// directory, or `--revision`) with a new generation, signs, archives the current manifest
/// and uploads the new one. The service must already be in the live manifest; new services
/// go in with `ferry upload` + `ferry publish`.
///
/// The live manifest is edited and re-signed only when it carries a valid signature by the
/// signing key or a key in `trusted_keys` of the config file; otherwise the push is refused
/// (exit 1) unless `--force`, which first prints the services it is about to sign.
///
/// Concurrent pushes of different services all land: when the live manifest changed
/// meanwhile in other services only, the push is re-applied on it, re-signed and written
/// again (bounded retries, backoff with jitter). It fails with "the manifest changed while
/// pushing — run again" only when the same service changed meanwhile (or the retries ran
/// out); the closure stays uploaded, so the re-run only rewrites the manifest. A closure
/// that `ferry gc` deleted while the push was under way is uploaded again.
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
    /// Edit and sign the live manifest even when no trusted key signed it (its services
    /// are printed first, compared with the newest manifest a trusted key signed).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Runs `ferry push`.
pub async fn run(args: &Args) -> Result<ExitCode> {
    let mut w = Writing::open(
        &args.key,
        &args.bucket,
        &args.wait,
        !args.dry_run,
        !args.dry_run,
    )
    .await?;
    let options = WriteOptions::default();
    let code = run_with(args, &w.bucket, &w.url, w.key.take(), &w.config, &options).await?;
    w.follow(code).await
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
    let base = live
        .manifest
        .services
        .iter()
        .find(|s| s.name == args.service)
        .cloned()
        .context("the service vanished from the manifest just read")?;
    let trusted = key.as_ref().map(|k| Trusted::new(k, config)).transpose()?;
    let mut reference = None;
    if let Some(t) = &trusted
        && let Err(why) = t.check(&live.manifest)
    {
        if !args.force {
            eprintln!("not pushed: {}", refusal(MANIFEST_KEY, &why));
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        reference = newest_trusted(bucket, t, MANIFEST_KEY).await?;
    }
    let trusted_keys = trusted.as_ref().map(Trusted::keys);

    let (tops, closure_len, plan) = prepare(
        std::slice::from_ref(&args.installable),
        bucket,
        trusted_keys,
        false,
    )
    .await
    .with_context(|| format!("preparing the upload to {url}"))?;
    let top = tops.first().context("no store path resolved")?.clone();
    let revision = args.revision.clone().or_else(git_head);
    let mut manifest = live.manifest.clone();
    set_service(&mut manifest, &args.service, &top, revision.clone())?;
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

    let (Some(key), Some(trusted)) = (key, trusted) else {
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
        for line in &service_changes(Some(&live.manifest), &manifest) {
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
    let mut report = execute(bucket, &plan, &key, &upload_options).await?;
    if !args.quiet {
        print_report(&report, bucket.requests());
    }

    let purpose = format!("ferry push {}", args.service);
    let mut reuploads = 0;
    let (written, changes, generation) = loop {
        let mut changes = Vec::new();
        let mut generation = String::new();
        let result = write_manifest(
            bucket,
            Some(live.current()),
            &purpose,
            options,
            |current| {
                let current = current.ok_or_else(|| {
                    WriteError::Conflict(format!("{MANIFEST_KEY} was deleted meanwhile"))
                })?;
                let now = parse(&current.bytes, MANIFEST_KEY).map_err(|e| {
                    WriteError::Conflict(format!(
                        "{MANIFEST_KEY} was replaced meanwhile by one that does not validate: {e:#}"
                    ))
                })?;
                let mut new = reapply_push(&base, &now, &top, revision.clone())
                    .map_err(|e| WriteError::Conflict(e.to_string()))?;
                new.generation = next_generation(Some(&now.generation), Utc::now())
                    .map_err(|e| WriteError::Other(e.into()))?;
                if let Err(why) = trusted.check(&now) {
                    if !args.force {
                        return Err(WriteError::Refused(refusal(MANIFEST_KEY, &why)));
                    }
                    for line in forced_diff(reference.as_ref(), &new) {
                        eprintln!("{line}");
                    }
                }
                let problems: Vec<String> = validate_manifest(&new)
                    .iter()
                    .filter(|p| p.is_error())
                    .map(ToString::to_string)
                    .collect();
                if !problems.is_empty() {
                    return Err(WriteError::Conflict(format!(
                        "re-applied on generation {}, the manifest would be invalid:\n{}",
                        now.generation,
                        problems.join("\n")
                    )));
                }
                if current.bytes != live.bytes && !args.quiet {
                    eprintln!(
                        "the live manifest changed meanwhile in other services (generation {}); re-applying `{}` on it",
                        now.generation, args.service
                    );
                }
                sign_manifest(&mut new, &key).map_err(|e| WriteError::Other(e.into()))?;
                changes = service_changes(Some(&now), &new);
                generation.clone_from(&new.generation);
                Ok(Planned {
                    bytes: to_bytes(&new)?,
                    store_paths: vec![top.clone()],
                    objects: report.nar_keys.clone(),
                })
            },
        )
        .await;
        match result {
            Ok(written) => break (written, changes, generation),
            Err(WriteError::Missing(gone)) if reuploads < REUPLOADS => {
                reuploads += 1;
                eprintln!(
                    "{} of this push's objects were deleted (by `ferry gc`?) before the manifest was written; uploading again",
                    gone.len()
                );
                let (_, _, again) = prepare(
                    std::slice::from_ref(&args.installable),
                    bucket,
                    Some(trusted.keys()),
                    false,
                )
                .await?;
                report = execute(bucket, &again, &key, &upload_options).await?;
            }
            Err(WriteError::Refused(why)) => {
                eprintln!("not pushed: {why}");
                return Ok(ExitCode::from(EXIT_FAILED));
            }
            Err(e) => return Err(e.into()),
        }
    };
    for line in &changes {
        println!("{line}");
    }
    if !args.quiet {
        eprintln!(
            "pushed `{}` as generation {generation} to {url}; the manifest it replaced is archived as {} ({} requests in all{})",
            args.service,
            written.archived.as_deref().unwrap_or("(none)"),
            bucket.requests(),
            if written.attempts > 1 {
                format!(", {} attempts", written.attempts)
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
