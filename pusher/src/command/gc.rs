//! `ferry gc`: delete the NARs and narinfos no kept manifest needs.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use ferry_bucket::{Bucket, Fetched, ObjectInfo};
use ferry_schema::layout::{CACHE_INDEX_KEY, MANIFEST_KEY, NAR_PREFIX, archive_key, narinfo_key};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::cache_index_store::{self, Signer, prune};
use crate::cli::EXIT_FAILED;
use crate::gc_plan::{
    GcPlan, KeepPolicy, NarinfoRefs, batches, is_narinfo_key, kept_generations,
    manifest_store_paths, parse_narinfo, plan, referrers_first,
};
use crate::lease_holder::{Held, release, take_waiting};
use crate::live_manifest::archived_generations;
use crate::manifest_trust::Trusted;
use crate::manifest_write::WriteOptions;
use crate::settings::{BucketArgs, KeyArgs, load_config, load_key_if_any, open_bucket};

/// Requests in flight while reading narinfos or deleting.
const CONCURRENCY: usize = 16;

/// Objects deleted under one taking of the lease.
const BATCH: usize = 256;

/// Delete cached NARs and narinfos that no kept manifest needs.
///
/// Kept: the closures of the live manifest and of the archived manifests chosen by `--keep`
/// (default: every archived manifest of the last `--keep-days` days), found by walking the
/// narinfos' References in the bucket (no local Nix needed), plus anything written less
/// than `--min-age-hours` ago (an upload a later `publish` or a running `push` is about to
/// name). Everything else among `<hash>.narinfo` and `nar/*` can go; manifests, status
/// reports, `nix-cache-info` and the cache index are never deleted.
///
/// Without `--delete` this is a dry run: it lists what would go and the bytes it would
/// free, and deletes nothing. With `--delete` each narinfo is deleted before any NAR (so a
/// reader never finds a narinfo whose NAR is gone) and a narinfo only after every narinfo
/// that references it (so one that is there has its whole closure).
///
/// Uploads skip the paths listed in the bucket's cache index (`ferry-cache-index.json`,
/// signed by the pusher) without looking them up, so gc takes the narinfos it is about to
/// delete out of the index first (and, at the end, again), and also drops paths whose
/// narinfo is not in the bucket (deleted by another tool). It re-signs the index with the
/// signing key; without one (`--key-file` or the usual places) it empties the index, and
/// the next upload looks every path up once.
///
/// It is safe to run while others push: deletions go in batches, each under
/// `manifest.lease` (which every manifest write takes too), and before each batch gc reads
/// `manifest.json` again. When it changed (a push or publish landed), gc stops and says to
/// run it again (exit 1): the new manifest may name a path it was about to delete. A push
/// whose closure gc deleted before it wrote the manifest finds that out under the lease and
/// uploads it again. `ferry rollback` refuses to go back to a generation whose closures were
/// collected.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// Keep the closures of the newest N archived manifests (instead of --keep-days).
    #[arg(long, value_name = "N", conflicts_with = "keep_days")]
    pub keep: Option<usize>,
    /// Keep the closures of every archived manifest of the last DAYS days.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub keep_days: u32,
    /// Never delete objects written less than HOURS hours ago.
    #[arg(long, value_name = "HOURS", default_value_t = 24)]
    pub min_age_hours: u64,
    /// Really delete (without it, only list what would go).
    #[arg(long, conflicts_with = "dry_run")]
    pub delete: bool,
    /// List what would go and delete nothing (the default).
    #[arg(long)]
    pub dry_run: bool,
    /// Re-signs the cache index after removing deleted paths (only with --delete; without
    /// a key the index is emptied).
    #[command(flatten)]
    pub key: KeyArgs,
}

/// Reads `key` as bytes; `None` when absent.
async fn fetch(bucket: &impl Bucket, key: &str) -> Result<Option<Vec<u8>>> {
    match bucket
        .get(key, None)
        .await
        .with_context(|| format!("reading {key}"))?
    {
        Fetched::Found { bytes, .. } => Ok(Some(bytes)),
        Fetched::Missing | Fetched::Unchanged => Ok(None),
    }
}

/// The store paths the live manifest and the kept archived ones name, a description of
/// which manifests those are, and the live manifest's bytes (what gc checks before each
/// batch that nobody replaced).
async fn kept_roots(
    bucket: &impl Bucket,
    policy: KeepPolicy,
) -> Result<(Vec<String>, Vec<String>, Option<Vec<u8>>)> {
    let mut keys = vec![MANIFEST_KEY.to_owned()];
    let generations = kept_generations(&archived_generations(bucket).await?, policy);
    keys.extend(generations.iter().map(|g| archive_key(g)));
    let mut roots = Vec::new();
    let mut described = Vec::new();
    let mut live = None;
    for key in keys {
        let Some(bytes) = fetch(bucket, &key).await? else {
            continue;
        };
        if key == MANIFEST_KEY {
            live = Some(bytes.clone());
        }
        let paths = manifest_store_paths(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{key}: {e}; gc cannot tell which closures it needs, so it deletes nothing (fix or remove that manifest)"
            )
        })?;
        described.push(key);
        roots.extend(paths);
    }
    Ok((roots, described, live))
}

/// Walks References from `roots` (narinfo keys), reading each narinfo once.
async fn walk(
    bucket: &impl Bucket,
    roots: Vec<String>,
) -> Result<(BTreeMap<String, NarinfoRefs>, Vec<String>)> {
    let mut reachable = BTreeMap::new();
    let mut absent = Vec::new();
    let mut frontier = roots;
    frontier.sort();
    frontier.dedup();
    while !frontier.is_empty() {
        let fetched: Vec<(String, Option<Vec<u8>>)> = stream::iter(frontier)
            .map(|key| async move { fetch(bucket, &key).await.map(|b| (key, b)) })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut next = Vec::new();
        for (key, bytes) in fetched {
            let Some(bytes) = bytes else {
                absent.push(key);
                continue;
            };
            let refs = parse_narinfo(&String::from_utf8_lossy(&bytes)).map_err(|e| {
                anyhow::anyhow!(
                    "{key}: {e}; gc cannot tell what it references, so it deletes nothing"
                )
            })?;
            next.extend(
                refs.references
                    .iter()
                    .filter(|r| !reachable.contains_key(*r) && **r != key)
                    .cloned(),
            );
            reachable.insert(key, refs);
        }
        next.sort();
        next.dedup();
        next.retain(|k| !reachable.contains_key(k));
        frontier = next;
    }
    Ok((reachable, absent))
}

/// What each narinfo about to go says (its store path for the listing, its references for
/// the order of deletion); a narinfo that cannot be read or parsed is left out.
async fn doomed_narinfos(
    bucket: &impl Bucket,
    narinfos: &[ObjectInfo],
) -> BTreeMap<String, NarinfoRefs> {
    stream::iter(narinfos)
        .map(|o| async move {
            let text = fetch(bucket, &o.key).await.ok().flatten()?;
            let refs = parse_narinfo(&String::from_utf8_lossy(&text)).ok()?;
            Some((o.key.clone(), refs))
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

fn print_plan(p: &GcPlan, names: &BTreeMap<String, String>, delete: bool) {
    let verb = if delete { "deleting" } else { "would delete" };
    for o in &p.narinfos {
        let name = names.get(&o.key).map_or("", String::as_str);
        println!("{verb} {} ({} bytes) {name}", o.key, o.size);
    }
    for o in &p.nars {
        println!("{verb} {} ({} bytes)", o.key, o.size);
    }
    for path in &p.missing_nars {
        eprintln!(
            "warning: the NAR of kept {path} is not in the bucket; re-upload it with `ferry upload {path}`"
        );
    }
}

/// Deletes `objects` concurrently; all are gone when this returns Ok.
async fn delete_all(bucket: &impl Bucket, objects: &[ObjectInfo]) -> Result<()> {
    stream::iter(objects)
        .map(|o| async move {
            bucket
                .delete(&o.key)
                .await
                .with_context(|| format!("deleting {}", o.key))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

/// How a batch went.
enum Batch {
    /// Deleted these many objects.
    Deleted(usize),
    /// The live manifest changed since gc planned: stop.
    ManifestChanged,
}

/// Deletes one batch under the lease, after checking that `manifest.json` still has the
/// bytes gc planned with. The live manifest's store paths at this moment are roots: none
/// of their narinfos goes, whatever the plan said. A NAR written again since the plan's
/// listing (an upload of the same path meanwhile) is kept.
async fn delete_batch(
    bucket: &impl Bucket,
    batch: &[ObjectInfo],
    planned_live: Option<&[u8]>,
    held: &Held,
    pruning: &mut Pruning<'_>,
) -> Result<Batch> {
    let live = fetch(bucket, MANIFEST_KEY).await?;
    if live.as_deref() != planned_live {
        return Ok(Batch::ManifestChanged);
    }
    let roots: BTreeSet<String> = match &live {
        Some(bytes) => manifest_store_paths(bytes)
            .map_err(|e| anyhow::anyhow!("{MANIFEST_KEY}: {e}; gc deletes nothing more"))?
            .iter()
            .filter_map(|p| narinfo_key(p))
            .collect(),
        None => BTreeSet::new(),
    };
    let mut doomed: Vec<ObjectInfo> = batch
        .iter()
        .filter(|o| !roots.contains(&o.key))
        .cloned()
        .collect();
    if doomed.iter().any(|o| o.key.starts_with(NAR_PREFIX)) {
        let now: BTreeMap<String, Option<SystemTime>> = bucket
            .list(NAR_PREFIX)
            .await
            .context("listing the NARs again")?
            .into_iter()
            .map(|o| (o.key, o.modified))
            .collect();
        doomed.retain(|o| now.get(&o.key).is_some_and(|m| *m == o.modified));
    }
    // Out of the cache index before the narinfos go, so it never lists a deleted path.
    let hashes: Vec<String> = doomed
        .iter()
        .filter_map(|o| o.key.strip_suffix(".narinfo"))
        .map(str::to_owned)
        .collect();
    if !hashes.is_empty() {
        pruning.removed.extend(hashes);
        prune(
            bucket,
            &pruning.removed,
            Some(pruning.present),
            pruning.signer,
            false,
        )
        .await?;
    }
    let Some(deadline) = held.deadline() else {
        bail!("the lease lapsed before gc could delete (a very slow bucket?); run gc again");
    };
    match tokio::time::timeout(deadline, delete_all(bucket, &doomed)).await {
        Ok(done) => done.map(|()| Batch::Deleted(doomed.len())),
        Err(_) => bail!(
            "deleting a batch of {} objects did not finish within {} ms while gc held the lease; run gc again",
            doomed.len(),
            deadline.as_millis()
        ),
    }
}

/// Deletes `all` batch by batch, each under the lease: `Ok(Ok(objects deleted))`, or
/// `Ok(Err(why it stopped))` when the lease was busy or the live manifest changed.
async fn delete_batches(
    bucket: &impl Bucket,
    all: &[Vec<ObjectInfo>],
    planned_live: Option<&[u8]>,
    options: &WriteOptions,
    pruning: &mut Pruning<'_>,
) -> Result<Result<usize, String>> {
    let mut deleted = 0;
    for batch in all {
        let held = match take_waiting(bucket, "ferry gc", options.lease, &options.retry).await? {
            Ok(held) => held,
            Err(busy) => {
                return Ok(Err(format!(
                    "stopped after deleting {deleted} objects: {busy}; run gc again later"
                )));
            }
        };
        let outcome = delete_batch(bucket, batch, planned_live, &held, pruning).await;
        release(bucket, held).await;
        match outcome? {
            Batch::Deleted(n) => deleted += n,
            Batch::ManifestChanged => {
                return Ok(Err(format!(
                    "stopped after deleting {deleted} objects: {MANIFEST_KEY} changed while gc was deleting (a push or publish landed) and may name what gc planned to delete; run gc again"
                )));
            }
        }
    }
    Ok(Ok(deleted))
}

/// What gc does to the cache index while it deletes.
struct Pruning<'a> {
    /// Re-signs it; `None`: it is emptied instead.
    signer: Option<Signer<'a>>,
    /// The narinfo hashes of gc's listing.
    present: &'a BTreeSet<String>,
    /// The narinfo hashes taken out before their deletion.
    removed: BTreeSet<String>,
}

/// Runs `ferry gc`.
pub async fn run(args: &Args) -> Result<ExitCode> {
    let config = load_config()?;
    let (url, bucket) = open_bucket(&args.bucket, &config).await?;
    let key = if args.delete {
        load_key_if_any(&args.key, &config)?
    } else {
        None
    };
    let trusted = key.as_ref().map(|k| Trusted::new(k, &config)).transpose()?;
    let signer = key.as_ref().zip(trusted.as_ref()).map(|(key, t)| Signer {
        key,
        trusted: t.keys(),
    });
    run_with(
        args,
        &bucket,
        &url.to_string(),
        &WriteOptions::default(),
        signer,
    )
    .await
}

/// `ferry gc` on an opened bucket (`url` names it in messages); `options` gives the lease's
/// timings and how long to wait for it; `signer` re-signs the cache index (without one,
/// `--delete` empties it).
pub async fn run_with(
    args: &Args,
    bucket: &impl Bucket,
    url: &str,
    options: &WriteOptions,
    signer: Option<Signer<'_>>,
) -> Result<ExitCode> {
    let policy = match args.keep {
        Some(n) => KeepPolicy::Newest(n),
        None => KeepPolicy::Since(Utc::now() - chrono::Duration::days(i64::from(args.keep_days))),
    };
    // List first: an object written after this listing is not a candidate at all.
    let listing = bucket.list("").await.context("listing the bucket")?;
    let young_since = match args.min_age_hours {
        0 => None,
        h => SystemTime::now().checked_sub(Duration::from_secs(h.saturating_mul(3600))),
    };
    let (paths, manifests, planned_live) = kept_roots(bucket, policy).await?;
    let mut roots = Vec::new();
    for path in &paths {
        match narinfo_key(path) {
            Some(key) => roots.push(key),
            None => bail!(
                "a kept manifest names {path:?}, which is not a store path; gc deletes nothing"
            ),
        }
    }
    // Young narinfos are roots too: their references must outlive them.
    roots.extend(
        listing
            .iter()
            .filter(|o| is_narinfo_key(&o.key))
            .filter(|o| young_since.is_some_and(|s| o.modified.is_none_or(|m| m >= s)))
            .map(|o| o.key.clone()),
    );
    let (reachable, absent) = walk(bucket, roots).await?;
    for key in &absent {
        eprintln!("note: {key} is named by a kept manifest or reference but is not in the bucket");
    }
    let p = plan(&listing, &reachable, young_since);
    let age = match args.min_age_hours {
        0 => String::new(),
        h => format!(" and everything written in the last {h} h"),
    };
    eprintln!(
        "keeping the closures of {} manifest(s) ({} store paths){age}: {} narinfos and {} NARs stay",
        manifests.len(),
        reachable.len(),
        p.kept_narinfos,
        p.kept_nars
    );
    let doomed = doomed_narinfos(bucket, &p.narinfos).await;
    let names: BTreeMap<String, String> = doomed
        .iter()
        .map(|(k, r)| (k.clone(), r.store_path.clone()))
        .collect();
    print_plan(&p, &names, args.delete);
    let present: BTreeSet<String> = listing
        .iter()
        .filter(|o| is_narinfo_key(&o.key))
        .filter_map(|o| o.key.strip_suffix(".narinfo"))
        .map(str::to_owned)
        .collect();
    if args.delete {
        if signer.is_none() && !p.narinfos.is_empty() {
            eprintln!(
                "no signing key: {CACHE_INDEX_KEY} is emptied instead of pruned (the next upload looks every path up once); pass --key-file to keep it"
            );
        }
        if prune(bucket, &BTreeSet::new(), Some(&present), signer, true).await? {
            eprintln!(
                "{CACHE_INDEX_KEY} listed paths whose narinfo is not in the bucket (deleted by another tool?); they are out of it now"
            );
        }
    } else {
        let gone = cache_index_store::read(bucket, None)
            .await?
            .seen
            .hashes
            .difference(&present)
            .count();
        if gone > 0 {
            eprintln!(
                "{CACHE_INDEX_KEY} lists {gone} path(s) whose narinfo is not in the bucket (deleted by another tool?): uploads would skip them; `ferry gc --delete` (or `ferry upload --force`) takes them out"
            );
        }
    }
    if p.is_empty() {
        eprintln!("nothing to delete in {url}");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.delete {
        eprintln!(
            "dry run: would delete {} narinfos and {} NARs, freeing {} bytes; nothing deleted (pass --delete to delete)",
            p.narinfos.len(),
            p.nars.len(),
            p.bytes()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let refs: BTreeMap<String, Vec<String>> =
        doomed.into_iter().map(|(k, r)| (k, r.references)).collect();
    // Narinfos referrers first, then the NARs; each batch under the lease.
    let mut all = batches(referrers_first(&p.narinfos, &refs), BATCH);
    all.extend(batches(vec![p.nars.clone()], BATCH));
    let mut pruning = Pruning {
        signer,
        present: &present,
        removed: BTreeSet::new(),
    };
    let outcome =
        delete_batches(bucket, &all, planned_live.as_deref(), options, &mut pruning).await;
    // An upload that read the index before gc's write and wrote after it (on a store
    // without conditional writes) may have put a deleted path back: take them out again.
    if !pruning.removed.is_empty() {
        prune(bucket, &pruning.removed, None, signer, true)
            .await
            .with_context(|| format!("{} narinfos were deleted; run gc again so that {CACHE_INDEX_KEY} surely lists none of them", pruning.removed.len()))?;
    }
    let deleted = match outcome? {
        Ok(deleted) => deleted,
        Err(stopped) => {
            eprintln!("{stopped}");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };
    eprintln!(
        "deleted {deleted} objects ({} narinfos and {} NARs planned) from {url}, freeing up to {} bytes",
        p.narinfos.len(),
        p.nars.len(),
        p.bytes()
    );
    Ok(ExitCode::SUCCESS)
}
