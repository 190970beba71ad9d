//! Reading and writing the cache index (`cache_index.rs`) in the bucket: one bounded GET
//! when an upload plans; after it, a fresh read, the merge and a write (`If-Match` on the
//! ETag just read, or `If-None-Match: *` when there was none, repeated on a conflict);
//! and `ferry gc`'s pruning before it deletes narinfos.
//!
//! The conditions are sent whether or not the store honours them (no probe): where they
//! are honoured the read-merge-write is atomic; where they are ignored (Garage) the write
//! is a plain put of a merge read milliseconds before, and a concurrent writer's change
//! can be lost in that window — at worst a path an upload added is looked up again later,
//! or a path gc removed is listed until gc's closing pass removes it again.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_bucket::{Bucket, BucketError, Fetched, PutCondition, PutOutcome};
use ferry_schema::layout::CACHE_INDEX_KEY;
use ferry_schema::{PublicKey, SecretKey};
use rand::Rng;

use crate::cache_index::{MAX_BYTES, Seen, Update, add, hash_of, remove, render, seen};
use crate::upload_plan::UploadPlan;

/// Read-merge-write attempts before giving up on a contended index.
const ATTEMPTS: u32 = 8;

/// The key that signs the index and the keys whose index signatures are accepted.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    /// Signs what is written.
    pub key: &'a SecretKey,
    /// Accepted on what is read (the signing key's public half among them).
    pub trusted: &'a [PublicKey],
}

/// The index as read, with what a conditional write needs.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// What the reader takes from it.
    pub seen: Seen,
    /// Whether there is an object at the key (usable or not).
    pub present: bool,
    /// Its ETag, when the store gave one.
    pub etag: Option<String>,
}

/// Reads the index; with `trusted`, its hashes count only when one of them signed it
/// (see [`seen`]). An index over [`MAX_BYTES`] is ignored.
pub async fn read(bucket: &impl Bucket, trusted: Option<&[PublicKey]>) -> Result<Stored> {
    match bucket.get_bounded(CACHE_INDEX_KEY, None, MAX_BYTES).await {
        Ok(Fetched::Found { bytes, etag }) => Ok(Stored {
            seen: seen(Some(&bytes), trusted),
            present: true,
            etag,
        }),
        Ok(Fetched::Missing | Fetched::Unchanged) => Ok(Stored::default()),
        Err(BucketError::TooLarge { .. }) => Ok(Stored {
            seen: Seen {
                warning: Some(format!("it is larger than {MAX_BYTES} bytes")),
                ..Seen::default()
            },
            present: true,
            etag: None,
        }),
        Err(e) => Err(e).with_context(|| format!("reading {CACHE_INDEX_KEY}")),
    }
}

/// The one-line warning for an index that was not used.
pub fn warning(why: &str) -> String {
    format!(
        "warning: ignoring {CACHE_INDEX_KEY} in the bucket: {why}; every path is looked up instead (an upload writes a signed one)"
    )
}

/// Writes `bytes` over the index `read` found, on the condition that it is still that one;
/// `false` when another writer got there first.
async fn write(bucket: &impl Bucket, read: &Stored, bytes: Vec<u8>) -> Result<bool> {
    let condition = match (&read.etag, read.present) {
        (_, false) => Some(PutCondition::IfAbsent),
        (Some(etag), true) => Some(PutCondition::IfMatch(etag.clone())),
        (None, true) => None,
    };
    let written = match condition {
        Some(condition) => match bucket
            .put_if(CACHE_INDEX_KEY, bytes.clone(), condition)
            .await
        {
            Ok(PutOutcome::Written) => true,
            Ok(PutOutcome::PreconditionFailed) => false,
            // A store that refuses the condition headers outright: a plain write is what
            // it would have done with them ignored.
            Err(e)
                if !bucket
                    .conditional_writes()
                    .await
                    .context("checking whether the bucket honours conditional writes")? =>
            {
                drop(e);
                bucket.put(CACHE_INDEX_KEY, bytes).await.map(|()| true)?
            }
            Err(e) => return Err(e).with_context(|| format!("writing {CACHE_INDEX_KEY}")),
        },
        None => bucket
            .put(CACHE_INDEX_KEY, bytes)
            .await
            .map(|()| true)
            .with_context(|| format!("writing {CACHE_INDEX_KEY}"))?,
    };
    Ok(written)
}

/// A new epoch: 16 random bytes as hex.
pub fn new_epoch() -> String {
    let bytes: [u8; 16] = rand::thread_rng().r#gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn backoff(attempt: u32) {
    let base = 20u64.saturating_mul(1 << attempt.min(8));
    let jitter = rand::thread_rng().gen_range(0.5..1.5);
    tokio::time::sleep(Duration::from_millis(base).mul_f64(jitter)).await;
}

/// What recording an upload in the index did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Wrote the index with these many more paths.
    Added(usize),
    /// Every path was listed already (or there was nothing to add).
    NothingNew,
    /// `ferry gc` deleted narinfos since the upload planned; nothing added.
    EpochChanged,
    /// Other writers won every attempt; nothing added.
    Contended,
}

/// After `plan` was executed: adds the paths it uploaded and those it found by lookup.
pub async fn record_upload(
    bucket: &impl Bucket,
    plan: &UploadPlan,
    signer: Signer<'_>,
) -> Result<Recorded> {
    let ours: BTreeSet<String> = plan
        .missing()
        .map(|i| i.path.as_str())
        .chain(plan.index.verified.iter().map(String::as_str))
        .filter_map(hash_of)
        .collect();
    if ours.is_empty() {
        return Ok(Recorded::NothingNew);
    }
    for attempt in 1..=ATTEMPTS {
        let now = read(bucket, Some(signer.trusted)).await?;
        let index = match add(plan.index.epoch.as_deref(), &now.seen, &ours, new_epoch) {
            Update::Write(index) => index,
            Update::NothingNew => return Ok(Recorded::NothingNew),
            Update::EpochChanged => return Ok(Recorded::EpochChanged),
        };
        let added = index.hashes.len().saturating_sub(now.seen.hashes.len());
        if write(bucket, &now, render(&index, Some(signer.key))).await? {
            return Ok(Recorded::Added(added));
        }
        backoff(attempt).await;
    }
    Ok(Recorded::Contended)
}

/// [`record_upload`], reporting instead of failing: the upload itself succeeded, and an
/// index that was not updated only costs a later upload some lookups.
pub async fn record_upload_or_warn(bucket: &impl Bucket, plan: &UploadPlan, signer: Signer<'_>) {
    match record_upload(bucket, plan, signer).await {
        Ok(Recorded::Contended) => eprintln!(
            "warning: {CACHE_INDEX_KEY} was being rewritten by others on every attempt; this upload's paths are not in it (the next upload looks them up)"
        ),
        Ok(_) => {}
        Err(e) => eprintln!(
            "warning: could not update {CACHE_INDEX_KEY}: {e:#}; the upload is complete, the next one looks its paths up"
        ),
    }
}

/// `ferry gc`'s write: the index without the hashes in `removed` and, given `present` (the
/// narinfo hashes of a listing), without any not there, under a new epoch; signed by
/// `signer`, or listing nothing without one. `only_if_needed`: write only when the index
/// lists something to drop. Returns whether it wrote; an error when it could not, in which
/// case gc must not delete.
pub async fn prune(
    bucket: &impl Bucket,
    removed: &BTreeSet<String>,
    present: Option<&BTreeSet<String>>,
    signer: Option<Signer<'_>>,
    only_if_needed: bool,
) -> Result<bool> {
    for attempt in 1..=ATTEMPTS {
        // Without a key every hash counts (it decides only whether to write).
        let now = read(bucket, signer.map(|s| s.trusted)).await?;
        let stale = |h: &String| removed.contains(h) || present.is_some_and(|p| !p.contains(h));
        if only_if_needed && !now.seen.hashes.iter().any(stale) {
            return Ok(false);
        }
        let index = remove(&now.seen, removed, present, signer.is_some(), new_epoch());
        if write(bucket, &now, render(&index, signer.map(|s| s.key))).await? {
            return Ok(true);
        }
        backoff(attempt).await;
    }
    bail!(
        "{CACHE_INDEX_KEY} was rewritten by others on each of {ATTEMPTS} attempts to remove the paths gc is about to delete; gc deletes nothing more: run it again"
    )
}
