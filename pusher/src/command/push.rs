//! `ferry push`: upload one service's new closure (or, with `--system`, one host's whole
//! NixOS system) and point the live manifest at it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use ferry_bucket::Bucket;
use ferry_schema::layout::MANIFEST_KEY;
use ferry_schema::manifest::{HostSystem, Service};
use ferry_schema::names::is_valid_host_name;
use ferry_schema::{Manifest, SecretKey, sign_manifest, validate_manifest};

use crate::cache_index_store::{Signer, record_upload_or_warn};
use crate::cli::EXIT_FAILED;
use crate::command::upload::{
    CompressionArg, Resolved, plan_resolved, prepare, print_report, resolve_closure,
};
use crate::command::writing::Writing;
use crate::fleet_wait::WaitArgs;
use crate::lease_holder::{Claimed, abandon, claim};
use crate::live_manifest::{Live, parse, read_live, to_bytes};
use crate::manifest_edit::{
    EditError, find_service, next_generation, reapply_push, reapply_system, service_changes,
};
use crate::manifest_trust::{Trusted, forced_diff, newest_trusted, refusal};
use crate::manifest_write::{Planned, WriteError, WriteOptions, write_manifest_claimed};
use crate::resolve::{is_built, resolve_system};
use crate::revision::git_head;
use crate::settings::{BucketArgs, ConfigFile, KeyArgs};
use crate::uploader::{UploadOptions, execute};

/// How often a push uploads again what `ferry gc` deleted while it was under way.
const REUPLOADS: u32 = 2;

/// The most NAR bytes a push may have left to upload (the closure's paths the cache index
/// does not list) for it to claim the manifest lease while it uploads: seconds on a slow
/// link, well inside the lease's TTL, so it holds other writers up hardly longer than its
/// write would. A larger upload claims the lease after it.
const CLAIM_WHILE_UPLOADING: u64 = 16 * 1024 * 1024;

/// Deploy a new version of one service (or, with `--system`, a whole NixOS host): upload its
/// closure, then update the live manifest.
///
/// Builds the installable (or takes the store path), uploads what the bucket's cache lacks
/// (as `ferry upload`: paths in the signed cache index without a request, the others looked
/// up), then sets the service's `storePath` and `revision` (the git commit of the working
/// directory, or `--revision`) with a new generation, signs, archives the current manifest
/// and uploads the new one. The service must already be in the live manifest; new services
/// go in with `ferry upload` + `ferry publish`.
///
/// With `--system HOST TARGET` it deploys HOST's whole NixOS system instead: TARGET is a
/// built toplevel (`./result`), an installable naming one
/// (`.#nixosConfigurations.HOST.config.system.build.toplevel`) or a NixOS configuration
/// file (`configuration.nix`, built with `<nixpkgs/nixos>` from NIX_PATH); the manifest's
/// `systems.HOST` gets its path, and HOST's agent switches to it if its agent.toml has
/// `[system] enable = true` (test, health check, then the boot entry; switched back on a
/// failure). A `.nix` file given as a service's installable is refused: it would be ambiguous.
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
    #[arg(value_name = "SERVICE", required_unless_present = "system")]
    pub service: Option<String>,
    /// Store path, `./result` or installable (a flake output) of the service's new version.
    #[arg(
        value_name = "STORE_PATH|INSTALLABLE",
        required_unless_present = "system"
    )]
    pub installable: Option<String>,
    /// Deploy HOST's whole NixOS system instead of a service. TARGET: a built toplevel
    /// (`./result`), a flake output naming one, or a NixOS configuration `.nix` file.
    #[arg(long, num_args = 2, value_names = ["HOST", "TARGET"], conflicts_with_all = ["service", "installable"])]
    pub system: Option<Vec<String>>,
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

/// What one push changes: a service's closure or a host's system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// `ferry push SERVICE INSTALLABLE`.
    Service {
        /// The service.
        name: String,
        /// What the user named.
        installable: String,
    },
    /// `ferry push --system HOST TARGET`.
    System {
        /// The host.
        host: String,
        /// What the user named.
        target: String,
    },
}

impl Args {
    /// What this push changes. A `.nix` file as a service's installable is refused, naming
    /// the two forms it could mean.
    pub fn pushed(&self) -> Result<Pushed> {
        if let Some([host, target]) = self.system.as_deref() {
            if !is_valid_host_name(host) {
                bail!(
                    "--system {host:?}: not a valid host name; give the lowercase name the host's agent is configured with (agent.toml `host`)"
                );
            }
            return Ok(Pushed::System {
                host: host.clone(),
                target: target.clone(),
            });
        }
        let (Some(name), Some(installable)) = (&self.service, &self.installable) else {
            bail!("give SERVICE and STORE_PATH|INSTALLABLE, or --system HOST TARGET");
        };
        if installable.ends_with(".nix") && Path::new(installable).is_file() {
            bail!(
                "{installable} is a Nix file: for a whole NixOS host run `ferry push --system HOST {installable}`; for service `{name}`, build it first and push the result (`nix-build {installable}` then `ferry push {name} ./result`) or name a flake output"
            );
        }
        Ok(Pushed::Service {
            name: name.clone(),
            installable: installable.clone(),
        })
    }
}

impl Pushed {
    /// How the push is named in messages and lease purposes.
    fn describe(&self) -> String {
        match self {
            Self::Service { name, .. } => format!("`{name}`"),
            Self::System { host, .. } => format!("the system of host `{host}`"),
        }
    }

    /// What the user named.
    fn target(&self) -> &str {
        match self {
            Self::Service { installable, .. } => installable,
            Self::System { target, .. } => target,
        }
    }
}

/// What the pushed part was when the push read the manifest: a concurrent push re-applies
/// on a changed manifest only if this part is still the same.
enum Base {
    Service(Box<Service>),
    System {
        host: String,
        was: Option<HostSystem>,
    },
}

impl Base {
    /// Reads it from the live manifest; an unknown service is refused here, before
    /// anything is built or uploaded.
    fn of(pushed: &Pushed, live: &Manifest) -> Result<Self> {
        Ok(match pushed {
            Pushed::Service { name, installable } => {
                Self::Service(Box::new(find_service(live, name, installable)?.clone()))
            }
            Pushed::System { host, .. } => Self::System {
                host: host.clone(),
                was: live.systems.get(host).cloned(),
            },
        })
    }

    /// `now` with the pushed part set to `top`, refused when that part changed since.
    fn apply(
        &self,
        now: &Manifest,
        top: &str,
        revision: Option<String>,
    ) -> Result<Manifest, EditError> {
        match self {
            Self::Service(base) => reapply_push(base, now, top, revision),
            Self::System { host, was } => reapply_system(host, was.as_ref(), now, top, revision),
        }
    }
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

/// What a push knows once its closure is resolved.
struct Started {
    live: Live,
    base: Base,
    trusted: Option<Trusted>,
    /// With `--force` on a manifest no trusted key signed: the newest one a trusted key did
    /// (its key and itself).
    reference: Option<(String, Manifest)>,
    /// The installable (for a system, the toplevel it was built to).
    installable: String,
    resolved: Resolved,
}

/// Reads the live manifest, checks the pushed part and the manifest's signature, and
/// resolves the closure; `Err(code)` when the push stops here (untrusted manifest).
async fn start(
    args: &Args,
    pushed: &Pushed,
    bucket: &impl Bucket,
    url: &str,
    key: Option<&SecretKey>,
    config: &ConfigFile,
) -> Result<Result<Started, ExitCode>> {
    let Some(live) = read_live(bucket).await? else {
        bail!(
            "{url} has no {MANIFEST_KEY}; upload the closure with `ferry upload {}` and create the manifest with `ferry publish MANIFEST`",
            pushed.target()
        );
    };
    // Check the service before building or uploading anything.
    let base = Base::of(pushed, &live.manifest)?;
    let trusted = key.map(|k| Trusted::new(k, config)).transpose()?;
    let mut reference = None;
    if let Some(t) = &trusted
        && let Err(why) = t.check(&live.manifest)
    {
        if !args.force {
            eprintln!("not pushed: {}", refusal(MANIFEST_KEY, &why));
            return Ok(Err(ExitCode::from(EXIT_FAILED)));
        }
        reference = newest_trusted(bucket, t, MANIFEST_KEY).await?;
    }
    // A system is built and checked here (a configuration file needs `<nixpkgs/nixos>`);
    // then its store path is resolved like any other.
    let installable = match pushed {
        Pushed::Service { installable, .. } => installable.clone(),
        Pushed::System { target, .. } => {
            let target = target.clone();
            tokio::task::spawn_blocking(move || resolve_system(&target))
                .await
                .context("the nix thread failed")??
        }
    };
    let resolved = resolve_closure(
        std::slice::from_ref(&installable),
        bucket,
        trusted.as_ref().map(Trusted::keys),
    )
    .await
    .with_context(|| format!("preparing the upload to {url}"))?;
    Ok(Ok(Started {
        live,
        base,
        trusted,
        reference,
        installable,
        resolved,
    }))
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
    let pushed = args.pushed()?;
    let purpose = match &pushed {
        Pushed::Service { name, .. } => format!("ferry push {name}"),
        Pushed::System { host, .. } => format!("ferry push --system {host}"),
    };
    let writes = key.is_some();
    // Whether the bucket honours conditional writes (a few requests, asked once per run) is
    // needed to confirm the lease and for the manifest write: asked at once, beside the
    // rest, so its round trips are not added to a push's wall time over a slow link. Not in
    // a dry run, which writes nothing (the probe writes an object).
    let probe = async {
        if writes {
            Some(bucket.conditional_writes().await)
        } else {
            None
        }
    };
    // A push of something already built (a store path, `./result`) claims the manifest lease
    // at once, so the lease's settle time passes while the closure is read, looked up and
    // uploaded instead of after; it gives the claim back if the upload turns out large. A
    // claim that fails is left to the write, which claims again and reports what fails.
    let claim_now = async {
        if writes && is_built(pushed.target()) {
            claim(bucket, &purpose, options.lease).await.ok()
        } else {
            None
        }
    };
    let (started, claimed, _) = tokio::join!(
        start(args, &pushed, bucket, url, key.as_ref(), config),
        claim_now,
        probe
    );
    let started = match started {
        Ok(Ok(started)) => started,
        Ok(Err(code)) => {
            abandon(bucket, claimed).await;
            return Ok(code);
        }
        Err(e) => {
            abandon(bucket, claimed).await;
            return Err(e);
        }
    };
    let Started {
        live,
        base,
        trusted,
        reference,
        installable,
        resolved,
    } = started;
    let trusted_keys = trusted.as_ref().map(Trusted::keys);

    // A small upload (the usual incremental push) holds the lease while it looks up and
    // uploads its paths (claimed above, or now after a build); a larger one claims it after
    // the upload, so that it never holds other writers up for long.
    let small = resolved.unlisted_bytes() <= CLAIM_WHILE_UPLOADING;
    let claiming = async {
        match claimed {
            Some(Claimed::Written(claim)) if !small => {
                claim.abandon(bucket).await;
                None
            }
            Some(claimed) => Some(claimed),
            None if writes && small => claim(bucket, &purpose, options.lease).await.ok(),
            None => None,
        }
    };
    let upload_options = UploadOptions {
        compression: args
            .compression
            .with_zstd_level(args.zstd_level.or(config.zstd_level)),
        verbose: !args.quiet,
    };
    let uploading = async {
        let (tops, closure_len, plan) = plan_resolved(resolved, bucket, trusted_keys, false)
            .await
            .with_context(|| format!("preparing the upload to {url}"))?;
        let top = tops.first().context("no store path resolved")?.clone();
        let revision = args.revision.clone().or_else(git_head);
        let mut manifest = base.apply(&live.manifest, &top, revision.clone())?;
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
        let Some(key) = &key else {
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
            return Ok(None);
        };
        let report = execute(bucket, &plan, key, &upload_options).await?;
        Ok(Some((top, revision, plan, report)))
    };
    let (claimed, uploaded) = tokio::join!(claiming, uploading);
    let uploaded = match uploaded {
        Ok(uploaded) => uploaded,
        Err(e) => {
            abandon(bucket, claimed).await;
            return Err(e);
        }
    };
    let (Some((top, revision, plan, mut report)), Some(key), Some(trusted)) =
        (uploaded, key, trusted)
    else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut early = claimed;
    let signer = Signer {
        key: &key,
        trusted: trusted.keys(),
    };
    if !args.quiet {
        print_report(&report, bucket.requests());
    }

    // The cache index is an optimisation for the next push, independent of the manifest:
    // it is updated while the manifest is written rather than before.
    let index = record_upload_or_warn(bucket, &plan, signer);
    let mut reuploads = 0;
    let write = async {
        loop {
            let mut changes = Vec::new();
            let mut generation = String::new();
            let result = write_manifest_claimed(
            bucket,
            Some(live.current()),
            &purpose,
            options,
            early.take(),
            |current| {
                let current = current.ok_or_else(|| {
                    WriteError::Conflict(format!("{MANIFEST_KEY} was deleted meanwhile"))
                })?;
                let now = parse(&current.bytes, MANIFEST_KEY).map_err(|e| {
                    WriteError::Conflict(format!(
                        "{MANIFEST_KEY} was replaced meanwhile by one that does not validate: {e:#}"
                    ))
                })?;
                let mut new = base
                    .apply(&now, &top, revision.clone())
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
                        "the live manifest changed meanwhile elsewhere (generation {}); re-applying {} on it",
                        now.generation,
                        pushed.describe()
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
                Ok(written) => break Ok(Ok((written, changes, generation))),
                Err(WriteError::Missing(gone)) if reuploads < REUPLOADS => {
                    reuploads += 1;
                    eprintln!(
                        "{} of this push's objects were deleted (by `ferry gc`?) before the manifest was written; uploading again",
                        gone.len()
                    );
                    let (_, _, again) = prepare(
                        std::slice::from_ref(&installable),
                        bucket,
                        Some(trusted.keys()),
                        false,
                    )
                    .await?;
                    report = execute(bucket, &again, &key, &upload_options).await?;
                    record_upload_or_warn(bucket, &again, signer).await;
                }
                Err(WriteError::Refused(why)) => {
                    eprintln!("not pushed: {why}");
                    break Ok(Err(ExitCode::from(EXIT_FAILED)));
                }
                Err(e) => break Err(anyhow::Error::from(e)),
            }
        }
    };
    let ((), written) = tokio::join!(index, write);
    let (written, changes, generation) = match written {
        Ok(Ok(written)) => written,
        Ok(Err(code)) => return Ok(code),
        Err(e) => return Err(e),
    };
    for line in &changes {
        println!("{line}");
    }
    if !args.quiet {
        eprintln!(
            "pushed {} as generation {generation} to {url}; the manifest it replaced is archived as {} ({} requests in all{})",
            pushed.describe(),
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
