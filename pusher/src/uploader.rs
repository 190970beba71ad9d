//! Executing an [`UploadPlan`]: each NAR serialised, compressed and hashed on a blocking
//! thread (as many at once as there are cores), checked against Nix's NarHash (when the
//! in-process NAR differs, `nix-store --dump` makes it again and must match), then uploaded
//! (many at once: an upload waits on the network, not the CPU, so on a distant store their
//! round trips overlap while the next NARs compress). Each signed narinfo is written as soon
//! as its NAR is in the bucket and the narinfos of its references are written
//! (`narinfo_order.rs`); `nix-cache-info` when absent. An interruption at any point leaves
//! no narinfo without its NAR or its closure, and re-running uploads only what is still
//! missing. Progress (`progress.rs`) is fed NAR bytes as they are compressed and each path
//! once uploaded.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_bucket::{Bucket, Fetched};
use ferry_schema::layout::{CACHE_INFO_KEY, NAR_PREFIX, narinfo_key};
use ferry_schema::{PublicKey, SecretKey};
use futures_util::stream::FuturesUnordered;
use futures_util::{StreamExt, TryStreamExt, stream};

use crate::cache_index::{IndexPlan, Seen, hash_of};
use crate::nar_stream::{CompressedNar, Compression, NarSource, dump_and_compress};
use crate::narinfo_order::NarinfoOrder;
use crate::narinfo_text::{CACHE_INFO, UploadedNar, render, signed_by};
use crate::progress::{Mode, Progress};
use crate::upload_plan::{UploadPlan, plan};
use ferry_schema::path_info::PathInfo;

/// How many narinfo lookups run at once.
const LOOKUPS_AT_ONCE: usize = 16;
/// How many compressed NARs are uploading at once (each holds its temp file until done).
const UPLOADS_AT_ONCE: usize = 24;
/// How many narinfos are written at once.
const NARINFOS_AT_ONCE: usize = 16;

/// How many NARs are made and compressed at once: one per core (CPU-bound work).
fn compressions_at_once() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Upload settings.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// How NARs are compressed.
    pub compression: Compression,
    /// Show progress (a bar on a terminal, a line per uploaded path otherwise).
    pub verbose: bool,
}

/// What an upload did.
#[derive(Debug, Clone, Default)]
pub struct UploadReport {
    /// Paths uploaded.
    pub uploaded: usize,
    /// Paths already in the bucket.
    pub cached: usize,
    /// Uncompressed NAR bytes uploaded.
    pub nar_bytes: u64,
    /// Compressed bytes uploaded.
    pub file_bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// The NAR objects written.
    pub nar_keys: Vec<String>,
}

fn key_of(path: &str) -> Result<String> {
    narinfo_key(path).with_context(|| format!("{path} is not a store path"))
}

/// What the bucket has for one path.
enum Lookup {
    Absent,
    Trusted,
    Untrusted,
}

/// Whether the cache `index` lists `info` and counts as cached for it (never with `force`).
fn listed(info: &PathInfo, index: &Seen, force: bool) -> bool {
    !force && hash_of(&info.path).is_some_and(|h| index.hashes.contains(&h))
}

/// The paths of `closure` that the cache `index` does not list (every path with `force`):
/// the ones planning looks up, and at most what the upload sends.
pub fn unlisted<'a>(
    closure: &'a [PathInfo],
    index: &'a Seen,
    force: bool,
) -> impl Iterator<Item = &'a PathInfo> + 'a {
    closure.iter().filter(move |i| !listed(i, index, force))
}

/// Plans the upload of `closure`: which paths the bucket already has. `index` is the cache
/// index as read (`cache_index_store::read`, with the same `trusted`): a path it lists
/// counts as cached with no request of its own; only the others are looked up one by one.
/// With `trusted` keys a narinfo found by lookup counts only when one of them signed it for
/// that path (a planted narinfo, or one signed by a key no longer in use, is uploaded
/// again); without (a dry run, no key loaded) any narinfo counts. `force` uploads every
/// path again (the index counts only for its epoch).
pub async fn plan_upload(
    bucket: &impl Bucket,
    closure: &[PathInfo],
    index: Seen,
    trusted: Option<&[PublicKey]>,
    force: bool,
) -> Result<UploadPlan> {
    let found: Vec<(String, Lookup)> = stream::iter(unlisted(closure, &index, force))
        .map(|info| async move {
            let key = key_of(&info.path)?;
            let lookup = if force {
                Lookup::Absent
            } else if let Some(keys) = trusted {
                match bucket
                    .get(&key, None)
                    .await
                    .with_context(|| format!("reading {key} for {}", info.path))?
                {
                    Fetched::Found { bytes, .. } => {
                        if signed_by(&String::from_utf8_lossy(&bytes), &info.path, keys) {
                            Lookup::Trusted
                        } else {
                            Lookup::Untrusted
                        }
                    }
                    Fetched::Missing | Fetched::Unchanged => Lookup::Absent,
                }
            } else if bucket
                .exists(&key)
                .await
                .with_context(|| format!("checking {key} for {}", info.path))?
            {
                Lookup::Trusted
            } else {
                Lookup::Absent
            };
            Ok::<_, anyhow::Error>((info.path.clone(), lookup))
        })
        .buffer_unordered(LOOKUPS_AT_ONCE)
        .try_collect()
        .await?;
    let mut verified: Vec<String> = found
        .iter()
        .filter(|(_, l)| matches!(l, Lookup::Trusted))
        .map(|(p, _)| p.clone())
        .collect();
    verified.sort();
    let cached: BTreeSet<String> = closure
        .iter()
        .filter(|i| listed(i, &index, force))
        .map(|i| i.path.clone())
        .chain(verified.iter().cloned())
        .collect();
    let mut p = plan(closure, &cached);
    p.untrusted = found
        .into_iter()
        .filter(|(_, l)| matches!(l, Lookup::Untrusted))
        .map(|(p, _)| p)
        .collect();
    p.untrusted.sort();
    p.index = IndexPlan {
        listed: closure.iter().filter(|i| listed(i, &index, force)).count(),
        epoch: index.epoch,
        verified,
        warning: index.warning,
    };
    Ok(p)
}

/// Whether `nar` is the NAR the Nix database records for `info`.
fn matches_nix(nar: &CompressedNar, info: &PathInfo) -> bool {
    nar.nar_hash == info.nar_hash && nar.nar_size == info.nar_size
}

/// Makes and compresses `info`'s NAR on a blocking thread.
async fn make_nar(
    info: &PathInfo,
    source: NarSource,
    compression: Compression,
    progress: &Progress,
) -> Result<CompressedNar> {
    let (path, dir) = (info.path.clone(), std::env::temp_dir());
    let feed = progress.clone();
    tokio::task::spawn_blocking(move || {
        dump_and_compress(&path, source, compression, &dir, |n| feed.nar_bytes(n))
    })
    .await
    .context("the NAR compression thread failed")?
}

/// Makes and compresses `info`'s NAR and checks it against Nix's NarHash and NarSize.
async fn checked_nar(
    info: &PathInfo,
    compression: Compression,
    progress: &Progress,
) -> Result<CompressedNar> {
    let mut nar = make_nar(info, NarSource::InProcess, compression, progress).await?;
    if !matches_nix(&nar, info) {
        // Nix's own serialiser settles it: a path our NAR writer gets wrong still uploads.
        nar = make_nar(info, NarSource::NixStoreDump, compression, progress).await?;
    }
    if !matches_nix(&nar, info) {
        bail!(
            "{}: the NAR Nix dumped ({} bytes, {}) differs from what the Nix database records ({} bytes, {}); refusing to upload it. Run `nix-store --verify --check-contents` and repair the path",
            info.path,
            nar.nar_size,
            nar.nar_hash,
            info.nar_size,
            info.nar_hash
        );
    }
    Ok(nar)
}

/// Uploads `nar`, `info`'s NAR already checked by [`checked_nar`].
async fn upload_nar(
    bucket: &impl Bucket,
    info: &PathInfo,
    nar: CompressedNar,
    compression: Compression,
    progress: &Progress,
) -> Result<UploadedNar> {
    let hash = nar.file_hash.trim_start_matches("sha256:");
    let url = format!("{NAR_PREFIX}{hash}.nar.{}", compression.extension());
    bucket
        .put_file(&url, nar.file.path())
        .await
        .with_context(|| format!("uploading {url} for {}", info.path))?;
    progress.path_done(&info.path, nar.nar_size, nar.file_size);
    Ok(UploadedNar {
        url,
        compression: compression.name(),
        file_hash: nar.file_hash,
        file_size: nar.file_size,
    })
}

/// Executes `plan`: NARs, each narinfo once its NAR and its references' narinfos are in
/// the bucket, and `nix-cache-info` if absent.
pub async fn execute(
    bucket: &impl Bucket,
    plan: &UploadPlan,
    key: &SecretKey,
    options: &UploadOptions,
) -> Result<UploadReport> {
    let paths = u64::try_from(plan.missing().count()).unwrap_or(u64::MAX);
    let progress = Progress::start(Mode::for_stderr(!options.verbose), paths, plan.nar_bytes());
    let result = execute_with(bucket, plan, key, options.compression, &progress).await;
    // Cleared on failure too, so the error is not printed into a half-drawn bar.
    progress.finish();
    result
}

async fn execute_with(
    bucket: &impl Bucket,
    plan: &UploadPlan,
    key: &SecretKey,
    compression: Compression,
    progress: &Progress,
) -> Result<UploadReport> {
    let started = Instant::now();
    let cache_info = async {
        if !bucket
            .exists(CACHE_INFO_KEY)
            .await
            .context("checking nix-cache-info")?
        {
            bucket
                .put(CACHE_INFO_KEY, CACHE_INFO.as_bytes().to_vec())
                .await
                .context("writing nix-cache-info")?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let (nars, ()) = tokio::try_join!(
        upload_all(bucket, plan, key, compression, progress),
        cache_info
    )?;
    Ok(UploadReport {
        cached: plan.cached.len(),
        uploaded: nars.len(),
        nar_keys: nars.iter().map(|(_, n)| n.url.clone()).collect(),
        nar_bytes: nars.iter().map(|(i, _)| i.nar_size).sum(),
        file_bytes: nars.iter().map(|(_, n)| n.file_size).sum(),
        elapsed: started.elapsed(),
    })
}

/// Uploads every NAR of `plan` and writes each narinfo when [`NarinfoOrder`] says it may
/// be: compressions (one per core) feed uploads ([`UPLOADS_AT_ONCE`]); a compressed NAR
/// waits while all uploads are busy, and no further compression starts meanwhile, so at
/// most that many temp files exist at once.
async fn upload_all<'a>(
    bucket: &impl Bucket,
    plan: &'a UploadPlan,
    key: &SecretKey,
    compression: Compression,
    progress: &Progress,
) -> Result<Vec<(&'a PathInfo, UploadedNar)>> {
    let mut order = NarinfoOrder::new(plan);
    let mut nars = stream::iter(plan.missing())
        .map(|info| async move {
            let nar = checked_nar(info, compression, progress).await?;
            Ok::<_, anyhow::Error>((info, nar))
        })
        .buffer_unordered(compressions_at_once())
        .map_ok(|(info, nar)| async move {
            let uploaded = upload_nar(bucket, info, nar, compression, progress).await?;
            Ok((info, uploaded))
        })
        .try_buffer_unordered(UPLOADS_AT_ONCE)
        .fuse();
    let mut uploaded: HashMap<&str, usize> = HashMap::new();
    let mut done: Vec<(&PathInfo, UploadedNar)> = Vec::new();
    let mut ready: VecDeque<String> = VecDeque::new();
    let mut writing = FuturesUnordered::new();
    loop {
        while writing.len() < NARINFOS_AT_ONCE {
            let Some(path) = ready.pop_front() else { break };
            let (info, nar) = uploaded
                .get(path.as_str())
                .and_then(|n| done.get(*n))
                .with_context(|| format!("{path}: narinfo ready before its NAR (a bug)"))?;
            let (key_name, text) = (key_of(&info.path)?, render(info, nar, key));
            writing.push(async move {
                bucket
                    .put(&key_name, text.into_bytes())
                    .await
                    .with_context(|| format!("writing {key_name} for {path}"))?;
                Ok::<_, anyhow::Error>(path)
            });
        }
        tokio::select! {
            Some(nar) = nars.next() => {
                let (info, nar) = nar?;
                uploaded.insert(info.path.as_str(), done.len());
                done.push((info, nar));
                ready.extend(order.nar_uploaded(&info.path));
            }
            Some(written) = writing.next() => {
                ready.extend(order.narinfo_written(&written?));
            }
            else => break,
        }
    }
    if order.is_waiting() || !ready.is_empty() {
        bail!("some narinfos were never written (a bug in the upload order)");
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(hash: char, nar_size: u64) -> PathInfo {
        PathInfo {
            path: format!("/nix/store/{}-p", hash.to_string().repeat(32)),
            nar_hash: "sha256:0".into(),
            nar_size,
            references: Vec::new(),
            deriver: None,
            ca: None,
            signatures: Vec::new(),
        }
    }

    /// What a push may upload is bounded by what the index does not list: the early lease
    /// claim is sized from it.
    #[test]
    fn unlisted_is_what_the_index_does_not_list_or_everything_when_forced() {
        let closure = vec![info('a', 10), info('b', 20), info('c', 40)];
        let index = Seen {
            hashes: ["a".repeat(32), "c".repeat(32)].into(),
            ..Seen::default()
        };
        let sizes = |force| {
            unlisted(&closure, &index, force)
                .map(|i| i.nar_size)
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(false), vec![20]);
        assert_eq!(sizes(true), vec![10, 20, 40]);
        assert_eq!(
            unlisted(&closure, &Seen::default(), false).count(),
            3,
            "no index lists nothing"
        );
    }
}
