//! `ferry rollback`: put an archived manifest back as the live one.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use ferry_bucket::Bucket;
use ferry_schema::layout::{MANIFEST_KEY, archive_key};
use ferry_schema::{DEFAULT_SIZE_CAP, SecretKey, sign_manifest, validate_bytes};

use crate::cli::EXIT_FAILED;
use crate::command::publish::missing_closures;
use crate::command::writing::Writing;
use crate::fleet_wait::WaitArgs;
use crate::live_manifest::{archived_generations, read, to_bytes};
use crate::manifest_edit::{next_generation, service_changes, store_paths};
use crate::manifest_trust::{Trusted, forced_diff, newest_trusted, refusal};
use crate::manifest_write::{Planned, WriteError, WriteOptions, read_current, write_manifest};
use crate::settings::{BucketArgs, ConfigFile, KeyArgs};

/// Roll the live manifest back to an archived one.
///
/// Archives the current manifest, then puts the chosen archived one back as
/// `manifest.json`, re-signed with a new generation (so agents see a newer manifest), or
/// byte for byte with `--exact`. Default: one step back (the newest archive older than the
/// live manifest). Refuses (exit 1) when the chosen manifest's store paths are no longer in
/// the bucket's cache, unless `--allow-missing`, and — since it re-signs it — when the chosen
/// manifest carries no valid signature by the signing key or a key in `trusted_keys` of the
/// config file, unless `--force` (which first prints the services it is about to sign).
/// A live manifest that does not validate can be rolled back from. Like `push`, it fails
/// with "the manifest changed while pushing — run again" instead of overwriting a change
/// made meanwhile.
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
    /// Re-sign the chosen manifest even when no trusted key signed it (its services are
    /// printed first, compared with the newest manifest a trusted key signed).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Runs `ferry rollback`.
pub async fn run(args: &Args) -> Result<ExitCode> {
    let mut w = Writing::open(&args.key, &args.bucket, &args.wait, !args.exact, true).await?;
    let options = WriteOptions::default();
    let code = run_with(args, &w.bucket, &w.url, w.key.take(), &w.config, &options).await?;
    w.follow(code).await
}

/// `ferry rollback` on an opened bucket (`url` names it in messages); `key` is needed
/// unless `--exact`.
pub async fn run_with(
    args: &Args,
    bucket: &impl Bucket,
    url: &str,
    key: Option<SecretKey>,
    config: &ConfigFile,
    options: &WriteOptions,
) -> Result<ExitCode> {
    let Some(first) = read_current(bucket).await? else {
        bail!("{url} has no {MANIFEST_KEY}; there is nothing to roll back");
    };
    // A live manifest that does not validate is no reason to stay on it.
    let live = validate_bytes(&first.bytes, DEFAULT_SIZE_CAP)
        .ok()
        .map(|v| v.manifest);
    let generations = archived_generations(bucket).await?;
    let target = match &args.to {
        Some(g) => g.clone(),
        None => {
            let older: Vec<&String> = generations
                .iter()
                .filter(|g| {
                    live.as_ref()
                        .is_none_or(|l| g.as_str() < l.generation.as_str())
                })
                .collect();
            match older.get(args.steps.saturating_sub(1)) {
                Some(g) => (*g).clone(),
                None => bail!(
                    "there are only {} archived manifests older than the live one ({}); see `ferry history`",
                    older.len(),
                    live.as_ref().map_or("invalid", |l| l.generation.as_str())
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
    let changes = service_changes(live.as_ref(), &chosen.manifest);
    let (bytes, purpose, generation) = if args.exact {
        (
            chosen.bytes.clone(),
            format!("ferry rollback --exact --to {target}"),
            target.clone(),
        )
    } else {
        let key = key.context("a signing key is needed")?;
        let trusted = Trusted::new(&key, config)?;
        if let Err(why) = trusted.check(&chosen.manifest) {
            if !args.force {
                eprintln!("not rolled back: {}", refusal(&target_key, &why));
                return Ok(ExitCode::from(EXIT_FAILED));
            }
            let reference = newest_trusted(bucket, &trusted, &target_key).await?;
            for line in forced_diff(reference.as_ref(), &chosen.manifest) {
                eprintln!("{line}");
            }
        }
        let mut manifest = chosen.manifest.clone();
        let after = match &live {
            Some(l) => Some(l.generation.clone()),
            None => generations.first().cloned(),
        };
        manifest.generation = next_generation(after.as_deref(), Utc::now())?;
        manifest.signatures = None;
        sign_manifest(&mut manifest, &key)?;
        let generation = manifest.generation.clone();
        (
            to_bytes(&manifest)?,
            "ferry rollback".to_owned(),
            generation,
        )
    };
    let needed = if args.allow_missing {
        Vec::new()
    } else {
        store_paths(&chosen.manifest)
    };
    let result = write_manifest(bucket, Some(first.clone()), &purpose, options, |current| {
        if current.map(|c| &c.bytes) != Some(&first.bytes) {
            return Err(WriteError::Conflict(format!(
                "{MANIFEST_KEY} was replaced since this command read it"
            )));
        }
        Ok(Planned {
            bytes: bytes.clone(),
            store_paths: needed.clone(),
            objects: Vec::new(),
        })
    })
    .await;
    match result {
        Ok(_) => {}
        Err(WriteError::Missing(gone)) => {
            eprintln!(
                "not rolled back: {} store path(s) of {target} went from {url} meanwhile (`ferry gc`?): {}; upload them again with `ferry upload PATH...`",
                gone.len(),
                gone.join(", ")
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        Err(e) => return Err(e.into()),
    }
    if args.exact {
        eprintln!("rolled back to {target} byte for byte (generation {target})");
    } else {
        eprintln!("rolled back to the services of {target}, published as generation {generation}");
    }
    for line in &changes {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
