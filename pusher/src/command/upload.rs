//! `ferry upload`: sign and upload the closures of store paths or installables into the
//! bucket's binary cache; prints their store paths. Touches no manifest.

use std::process::ExitCode;

use anyhow::{Context, Result};
use ferry_bucket::Bucket;
use ferry_schema::{PublicKey, SecretKey};

use crate::cache_index::Seen;
use crate::cache_index_store::{self, Signer, record_upload_or_warn};
use crate::manifest_trust::Trusted;
use crate::nar_stream::Compression;
use crate::resolve::{closure, resolve};
use crate::settings::{BucketArgs, KeyArgs, load_config, load_key, open_bucket};
use crate::upload_plan::UploadPlan;
use crate::uploader::{UploadOptions, UploadReport, execute, plan_upload, unlisted};
use ferry_schema::path_info::PathInfo;

/// Upload the closures of store paths or installables to the bucket's binary cache.
///
/// Each argument is a store path (or a symlink into the store, like `./result`) or an
/// installable, which is built first (`nix build`, or `nix-build` for a `.nix` file).
/// Paths listed in the bucket's cache index (`ferry-cache-index.json`, signed by the
/// signing key or a key in `trusted_keys` of the config file) are skipped without a
/// request each; the others are looked up, and skipped when their narinfo is in the bucket
/// signed by such a key; a narinfo signed by no trusted key (planted, or signed by a key no
/// longer in use) is replaced, and an index no trusted key signed is ignored with a
/// warning. Afterwards the index gets the paths uploaded or found. Each missing path's NAR is
/// compressed with zstd (or xz), checked against Nix's NarHash and uploaded before its
/// signed narinfo. Shows progress on stderr (a bar on a terminal, a line per path
/// otherwise). Prints the top-level store paths, one per line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Store paths or installables.
    #[arg(value_name = "STORE_PATH|INSTALLABLE", required = true)]
    pub installables: Vec<String>,
    #[command(flatten)]
    pub bucket: BucketArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// zstd compression level (1-19; default 3, or `zstd_level` in the config file).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: Option<i32>,
    /// How NARs are compressed.
    #[arg(long, value_enum, default_value_t = CompressionArg::Zstd)]
    pub compression: CompressionArg,
    /// Print only errors and the store paths (no progress).
    #[arg(long)]
    pub quiet: bool,
    /// Upload every path again, even those the bucket has with a trusted signature or
    /// its cache index lists (repairs a cache whose objects were damaged or deleted by
    /// hand).
    #[arg(long)]
    pub force: bool,
}

/// The `--compression` choices of `upload` and `push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressionArg {
    /// zstd (`.nar.zst`), level from `--zstd-level`: fast; Nix ≥ 2.3 reads it.
    Zstd,
    /// xz (`.nar.xz`) at preset 6, as Nix's own default: smaller, much slower to write.
    Xz,
}

/// xz preset for `--compression xz` (Nix's default for binary caches).
const XZ_PRESET: u32 = 6;

impl CompressionArg {
    /// The compression to use, with the zstd level chosen by flag or config (default 3).
    pub fn with_zstd_level(self, zstd_level: Option<i32>) -> Compression {
        match self {
            CompressionArg::Zstd => Compression::Zstd(zstd_level.unwrap_or(3)),
            CompressionArg::Xz => Compression::Xz(XZ_PRESET),
        }
    }
}

/// Resolved installables: their store paths, their closure and the cache index read
/// beside them.
pub struct Resolved {
    /// The top-level store paths, one per installable.
    pub tops: Vec<String>,
    /// Their closure, as Nix describes it.
    pub closure: Vec<PathInfo>,
    /// The cache index as read.
    pub index: Seen,
}

impl Resolved {
    /// The NAR bytes of the paths the index does not list: at most what an upload (without
    /// `--force`) sends.
    pub fn unlisted_bytes(&self) -> u64 {
        unlisted(&self.closure, &self.index, false)
            .map(|i| i.nar_size)
            .sum()
    }
}

/// Resolves `installables` (building them if need be) and their closure, while the cache
/// index is read (with `trusted`, see [`cache_index_store::read`]).
pub async fn resolve_closure(
    installables: &[String],
    bucket: &impl Bucket,
    trusted: Option<&[PublicKey]>,
) -> Result<Resolved> {
    let owned = installables.to_vec();
    let nix = tokio::task::spawn_blocking(move || -> Result<_> {
        let tops = owned
            .iter()
            .map(|i| resolve(i))
            .collect::<Result<Vec<_>>>()?;
        let infos = closure(&tops)?;
        Ok((tops, infos))
    });
    let (nix, index) = tokio::join!(nix, cache_index_store::read(bucket, trusted));
    let (tops, closure) = nix.context("the nix thread failed")??;
    Ok(Resolved {
        tops,
        closure,
        index: index?.seen,
    })
}

/// Plans the upload of a resolved closure (see [`plan_upload`] for `trusted` and `force`),
/// printing what the plan warns of; returns the top-level paths and the closure's size.
pub async fn plan_resolved(
    resolved: Resolved,
    bucket: &impl Bucket,
    trusted: Option<&[PublicKey]>,
    force: bool,
) -> Result<(Vec<String>, usize, UploadPlan)> {
    let Resolved {
        tops,
        closure,
        index,
    } = resolved;
    let plan = plan_upload(bucket, &closure, index, trusted, force).await?;
    if let Some(why) = &plan.index.warning {
        eprintln!("{}", cache_index_store::warning(why));
    }
    if !plan.untrusted.is_empty() {
        eprintln!(
            "{} path(s) have a narinfo in the bucket that no trusted key signed (planted, or signed by a key no longer in use); uploading them again:",
            plan.untrusted.len()
        );
        for path in &plan.untrusted {
            eprintln!("  {path}");
        }
    }
    Ok((tops, closure.len(), plan))
}

/// Resolves `installables` and plans the upload of their closures ([`resolve_closure`],
/// then [`plan_resolved`]).
pub async fn prepare(
    installables: &[String],
    bucket: &impl Bucket,
    trusted: Option<&[PublicKey]>,
    force: bool,
) -> Result<(Vec<String>, usize, UploadPlan)> {
    let resolved = resolve_closure(installables, bucket, trusted).await?;
    plan_resolved(resolved, bucket, trusted, force).await
}

/// Resolves `installables`, then uploads what their closures lack.
pub async fn upload_installables(
    installables: &[String],
    bucket: &impl Bucket,
    key: &SecretKey,
    trusted: &Trusted,
    force: bool,
    options: &UploadOptions,
) -> Result<(Vec<String>, UploadReport)> {
    let (tops, closure_len, plan) =
        prepare(installables, bucket, Some(trusted.keys()), force).await?;
    if options.verbose {
        eprintln!(
            "{} paths in the closure: {} already in the bucket ({} listed in its index, {} found by lookup), {} to upload ({} bytes uncompressed)",
            closure_len,
            plan.cached.len(),
            plan.index.listed,
            plan.index.verified.len(),
            plan.missing().count(),
            plan.nar_bytes()
        );
    }
    let report = execute(bucket, &plan, key, options).await?;
    let signer = Signer {
        key,
        trusted: trusted.keys(),
    };
    record_upload_or_warn(bucket, &plan, signer).await;
    Ok((tops, report))
}

/// Prints the one-line summary of an upload.
pub fn print_report(report: &UploadReport, requests: u64) {
    let secs = report.elapsed.as_secs_f64();
    eprintln!(
        "uploaded {} paths ({} bytes as NAR, {} compressed), {} already cached; {requests} requests, {secs:.2} s",
        report.uploaded, report.nar_bytes, report.file_bytes, report.cached
    );
}

/// Runs `ferry upload`.
pub async fn run(args: &Args) -> Result<ExitCode> {
    let config = load_config()?;
    let key = load_key(&args.key, &config)?;
    let trusted = Trusted::new(&key, &config)?;
    let (url, bucket) = open_bucket(&args.bucket, &config).await?;
    let options = UploadOptions {
        compression: args
            .compression
            .with_zstd_level(args.zstd_level.or(config.zstd_level)),
        verbose: !args.quiet,
    };
    let (tops, report) = upload_installables(
        &args.installables,
        &bucket,
        &key,
        &trusted,
        args.force,
        &options,
    )
    .await
    .with_context(|| format!("uploading to {url}"))?;
    for top in &tops {
        println!("{top}");
    }
    if !args.quiet {
        print_report(&report, bucket.requests());
    }
    Ok(ExitCode::SUCCESS)
}
