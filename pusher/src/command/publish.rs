//! `ferry publish`: make a manifest file the live manifest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Utc;
use ferry_bucket::Bucket;
use ferry_schema::layout::{MANIFEST_KEY, narinfo_key};
use ferry_schema::{
    DEFAULT_SIZE_CAP, Manifest, SecretKey, sign_manifest, validate_bytes, validate_manifest,
};

use crate::cli::EXIT_FAILED;
use crate::command::writing::Writing;
use crate::fleet_wait::WaitArgs;
use crate::live_manifest::to_bytes;
use crate::manifest_edit::{
    decommission, emptied_hosts, is_later, next_generation, service_changes, store_paths,
};
use crate::manifest_trust::Trusted;
use crate::manifest_write::{Planned, WriteError, WriteOptions, read_current, write_manifest};
use crate::settings::{BucketArgs, ConfigFile, KeyArgs};

/// Publish a manifest file as the bucket's live manifest.
///
/// Validates it, checks that every store path it names has its narinfo in the bucket
/// (upload closures first with `ferry upload`), signs it, archives the current
/// `manifest.json` under `manifests/` and uploads the new one. A generation that is not
/// later than the live one is replaced by the current time. If another ferry changes the
/// live manifest meanwhile, nothing is written and it fails with "the manifest changed while
/// pushing — run again".
///
/// A live manifest that does not validate (or does not parse) is replaced all the same:
/// its bytes are archived as they are, as `manifests/invalid-<time>.json`, and a line says
/// so. The file is signed as the developer's own; what it replaces is archived, never
/// re-signed.
///
/// A host that the manifest names in no service's hosts keeps its services (its agent
/// refuses the manifest) unless the manifest decommissions it: `--decommission HOST`, for
/// emptying a host on purpose. A host that runs no Ferry service does nothing either way.
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
    /// Empty HOST on purpose: list it in the manifest's `decommission`, so its agent stops
    /// and removes every Ferry service it runs (repeatable). Without it, an agent whose host
    /// runs services that the manifest names nowhere refuses the manifest and keeps them, so
    /// a wrong hostName cannot wipe a host. HOST must not be in any service's hosts.
    #[arg(long, value_name = "HOST")]
    pub decommission: Vec<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
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
    let mut w = Writing::open(
        &args.key,
        &args.bucket,
        &args.wait,
        !args.dry_run,
        !args.dry_run,
    )
    .await?;
    let options = WriteOptions::default();
    let code = run_with(
        args,
        manifest,
        &w.bucket,
        &w.url,
        w.key.take(),
        &w.config,
        &options,
    )
    .await?;
    w.follow(code).await
}

/// `ferry publish` of the validated `manifest` (read from `args.manifest`) on an opened
/// bucket (`url` names it in messages); `key: None` is a dry run.
pub async fn run_with(
    args: &Args,
    mut manifest: Manifest,
    bucket: &impl Bucket,
    url: &str,
    key: Option<SecretKey>,
    config: &ConfigFile,
    options: &WriteOptions,
) -> Result<ExitCode> {
    if !args.decommission.is_empty() {
        decommission(&mut manifest, &args.decommission);
        let problems = validate_manifest(&manifest);
        if problems.iter().any(|p| p.is_error()) {
            for p in &problems {
                println!("{p}");
            }
            eprintln!(
                "{}: not published: the manifest with --decommission {} is invalid; fix the problems above",
                args.manifest.display(),
                args.decommission.join(" --decommission ")
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    }
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
    let first = read_current(bucket).await?;
    // What is live: a valid manifest, or bytes that do not validate (replaced all the same).
    let (live, invalid) = match &first {
        None => (None, None),
        Some(c) => match validate_bytes(&c.bytes, DEFAULT_SIZE_CAP) {
            Ok(v) => (Some(v.manifest), None),
            Err(problems) => (
                None,
                Some(
                    problems
                        .first()
                        .map_or_else(String::new, ToString::to_string),
                ),
            ),
        },
    };
    if let Some(prev) = &live
        && !is_later(&manifest.generation, &prev.generation)?
    {
        let fresh = next_generation(Some(&prev.generation), Utc::now())?;
        eprintln!(
            "generation {} is not later than the live {}; publishing as {fresh}",
            manifest.generation, prev.generation
        );
        manifest.generation = fresh;
    }
    let changes = service_changes(live.as_ref(), &manifest);
    for line in &changes {
        println!("{line}");
    }
    for host in emptied_hosts(live.as_ref(), &manifest) {
        eprintln!(
            "note: host {host} loses every service; its agent refuses this manifest and keeps them running unless you publish with --decommission {host}"
        );
    }
    let Some(key) = key else {
        if let Some(problem) = &invalid {
            eprintln!(
                "the live {MANIFEST_KEY} does not validate ({problem}); publishing would replace it"
            );
        }
        eprintln!("dry run: nothing written to {url}");
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(prev) = &live
        && let Err(why) = Trusted::new(&key, config)?.check(prev)
    {
        eprintln!(
            "note: the live {MANIFEST_KEY} this replaces is not signed by a trusted key ({why})"
        );
    }
    sign_manifest(&mut manifest, &key)?;
    let bytes = to_bytes(&manifest)?;
    let needed = if args.allow_missing {
        Vec::new()
    } else {
        store_paths(&manifest)
    };
    let result = write_manifest(
        bucket,
        first.clone(),
        &format!("ferry publish {}", args.manifest.display()),
        options,
        |current| {
            if current.map(|c| &c.bytes) != first.as_ref().map(|c| &c.bytes) {
                return Err(WriteError::Conflict(format!(
                    "{MANIFEST_KEY} was replaced since this command read it"
                )));
            }
            Ok(Planned {
                bytes: bytes.clone(),
                store_paths: needed.clone(),
                objects: Vec::new(),
            })
        },
    )
    .await;
    let written = match result {
        Ok(w) => w,
        Err(WriteError::Missing(gone)) => {
            eprintln!(
                "not published: {} store path(s) went from {url} while publishing (`ferry gc`?): {}; upload them again with `ferry upload PATH...`",
                gone.len(),
                gone.join(", ")
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        Err(e) => return Err(e.into()),
    };
    if let (Some(problem), Some(archived)) = (&invalid, &written.archived) {
        eprintln!(
            "replaced an invalid {MANIFEST_KEY} ({} bytes; {problem}); its bytes are archived as they were in {archived}",
            first.as_ref().map_or(0, |c| c.bytes.len())
        );
    }
    eprintln!(
        "published generation {} to {url} ({} change(s), signed with `{}`)",
        manifest.generation,
        changes.len(),
        key.name()
    );
    Ok(ExitCode::SUCCESS)
}
