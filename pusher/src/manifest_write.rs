//! Writing `manifest.json` without losing a concurrent change, and without naming closures
//! that `ferry gc` is deleting.
//!
//! One attempt: archive the manifest that is live (the bytes read, outside the lease: a
//! slow archive holds nobody up), take `manifest.lease` (`lease_holder.rs`), check that the
//! store paths the new manifest needs are in the cache (gc deletes only under the same
//! lease, referrers before what they reference, so a narinfo found here has its closure),
//! re-read `manifest.json` and compare bytes, check that enough of the lease is left, then
//! write — with `If-Match`/`If-None-Match: *` where the store honours them — within a
//! deadline inside the lease, and give the lease back if it is still ours.
//!
//! When the live manifest changed or the lease was busy, the attempt is repeated (bounded
//! attempts and time, exponential backoff with jitter) on a fresh read: the caller's plan
//! decides from what is live then whether its edit still applies (a push of one service
//! re-applies itself when only other services changed) or is a conflict ([`CONFLICT`]).

use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_bucket::{Bucket, Fetched, PutCondition, PutOutcome};
use ferry_schema::layout::{MANIFEST_KEY, narinfo_key};
use futures_util::{StreamExt, TryStreamExt, stream};
use rand::Rng;
use thiserror::Error;

use crate::lease::LeaseTimings;
use crate::lease_holder::{
    Busy, Claimed, Held, Taken, abandon, claim, give_back, read_record, release,
};
use crate::live_manifest::archive_current;
pub use crate::retry::RetryPolicy;

/// The message of a lost race; scripts and tests look for it.
pub const CONFLICT: &str = "the manifest changed while pushing — run again";

/// Settings of a manifest write (tests shorten the lease).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// The lease's timings.
    pub lease: LeaseTimings,
    /// Retries.
    pub retry: RetryPolicy,
}

/// The live manifest as stored (it may be invalid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// The store's ETag for them, when it gave one.
    pub etag: Option<String>,
}

/// What one attempt is to write, planned from what is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The new manifest's bytes.
    pub bytes: Vec<u8>,
    /// Store paths whose narinfo must be in the cache when it is written.
    pub store_paths: Vec<String>,
    /// Objects (NARs this run uploaded) that must still be there.
    pub objects: Vec<String>,
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The bytes written.
    pub bytes: Vec<u8>,
    /// Where the manifest it replaced was archived, if there was one.
    pub archived: Option<String>,
    /// Attempts it took.
    pub attempts: u32,
}

/// Why nothing was written.
#[derive(Debug, Error)]
pub enum WriteError {
    /// A concurrent change that retrying cannot reconcile.
    #[error("{CONFLICT} ({0})")]
    Conflict(String),
    /// Store paths or objects the new manifest needs are not in the bucket (a `ferry gc`
    /// deleted them after this command looked).
    #[error(
        "not in the bucket's cache any more (deleted meanwhile by `ferry gc`?): {}",
        .0.join(", ")
    )]
    Missing(Vec<String>),
    /// The plan refuses what is live now (e.g. no trusted key signed it).
    #[error("{0}")]
    Refused(String),
    /// Anything else: I/O, a bug.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Why an attempt did not write.
enum Retry {
    /// The live manifest changed, or the lease went by: plan again from a fresh read.
    Again(String),
    /// The lease is held by someone else.
    Busy(Busy),
}

/// Whether the live manifest found now is still the one read before.
pub fn unchanged(previous: Option<&Current>, now: &Fetched) -> bool {
    match (previous, now) {
        (None, Fetched::Missing) => true,
        (Some(p), Fetched::Found { bytes, .. }) => *bytes == p.bytes,
        _ => false,
    }
}

/// Reads `manifest.json` as stored; `None` when there is none.
pub async fn read_current(bucket: &impl Bucket) -> anyhow::Result<Option<Current>> {
    match bucket
        .get(MANIFEST_KEY, None)
        .await
        .with_context(|| format!("reading {MANIFEST_KEY}"))?
    {
        Fetched::Found { bytes, etag } => Ok(Some(Current { bytes, etag })),
        Fetched::Missing | Fetched::Unchanged => Ok(None),
    }
}

/// Writes the manifest `plan` makes from the live one (`first`: as the command read it),
/// archiving the one it replaces. `plan` is called again with a fresh read after a lost
/// race; it returns [`WriteError::Conflict`] when its change no longer applies. `purpose`
/// names the command for other writers' messages.
pub async fn write_manifest<B, F>(
    bucket: &B,
    first: Option<Current>,
    purpose: &str,
    options: &WriteOptions,
    plan: F,
) -> Result<Written, WriteError>
where
    B: Bucket,
    F: FnMut(Option<&Current>) -> Result<Planned, WriteError>,
{
    write_manifest_claimed(bucket, first, purpose, options, None, plan).await
}

/// [`write_manifest`] whose first attempt uses `early`, the lease claimed (for the same
/// `purpose`) while the command did something else, so that its settle time is already
/// over. A claim that goes unused is given back.
pub async fn write_manifest_claimed<B, F>(
    bucket: &B,
    first: Option<Current>,
    purpose: &str,
    options: &WriteOptions,
    mut early: Option<Claimed>,
    mut plan: F,
) -> Result<Written, WriteError>
where
    B: Bucket,
    F: FnMut(Option<&Current>) -> Result<Planned, WriteError>,
{
    let prepared = match bucket.conditional_writes().await {
        Ok(conditional) => plan(first.as_ref()).map(|planned| (conditional, planned)),
        Err(e) => Err(WriteError::Other(
            anyhow::Error::new(e).context("checking whether the bucket honours conditional writes"),
        )),
    };
    let (conditional, mut planned) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            abandon(bucket, early).await;
            return Err(e);
        }
    };
    let started = Instant::now();
    let mut current = first;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let why = match attempt_write(
            bucket,
            current.as_ref(),
            &planned,
            purpose,
            options,
            conditional,
            early.take(),
        )
        .await?
        {
            Ok(archived) => {
                return Ok(Written {
                    bytes: planned.bytes,
                    archived,
                    attempts: attempt,
                });
            }
            Err(Retry::Again(why)) => why,
            Err(Retry::Busy(busy)) => {
                let left = options.retry.budget.saturating_sub(started.elapsed());
                if busy.left > left {
                    return Err(WriteError::Conflict(busy.to_string()));
                }
                busy.to_string()
            }
        };
        let wait = options
            .retry
            .backoff(attempt, rand::thread_rng().gen_range(0.5..1.5));
        if attempt >= options.retry.attempts || started.elapsed() + wait > options.retry.budget {
            return Err(WriteError::Conflict(format!(
                "{why}; gave up after {attempt} attempts in {} s",
                started.elapsed().as_secs()
            )));
        }
        tokio::time::sleep(wait).await;
        current = read_current(bucket).await?;
        planned = plan(current.as_ref())?;
    }
}

/// One attempt (`early`: a lease claimed before it, for the first); `Ok(Ok(archive key))`
/// when written.
async fn attempt_write(
    bucket: &impl Bucket,
    current: Option<&Current>,
    planned: &Planned,
    purpose: &str,
    options: &WriteOptions,
    conditional: bool,
    early: Option<Claimed>,
) -> Result<Result<Option<String>, Retry>, WriteError> {
    // Archiving does not need the lease (archives have unique names): it runs while the lease
    // is claimed.
    let archive = async {
        match current {
            Some(c) => archive_current(bucket, c).await.map(Some),
            None => Ok(None),
        }
    };
    let claiming = async {
        match early {
            Some(claimed) => Ok(claimed),
            None => claim(bucket, purpose, options.lease).await,
        }
    };
    let (archived, claimed) = tokio::join!(archive, claiming);
    let claim = match claimed? {
        Claimed::Written(claim) => claim,
        Claimed::Busy(busy) => {
            archived?;
            return Ok(Err(Retry::Busy(busy)));
        }
    };
    let archived = match archived {
        Ok(archived) => archived,
        Err(e) => {
            claim.abandon(bucket).await;
            return Err(e.into());
        }
    };
    // The checks run during the settle time: they count only once the lease is confirmed
    // ours, and then nobody else can have changed the bucket since our claim was written.
    let (checked, taken) = tokio::join!(check(bucket, current, planned), claim.confirm(bucket));
    let held = match taken? {
        Taken::Held(held) => held,
        Taken::Busy(busy) => return Ok(Err(Retry::Busy(busy))),
    };
    let why = match checked {
        Ok(None) => match held.deadline() {
            Some(deadline) => {
                return write_holding(
                    bucket,
                    held,
                    current,
                    planned,
                    conditional,
                    deadline,
                    archived,
                )
                .await;
            }
            None => format!(
                "too little of the lease was left for the write (the checks took {} ms)",
                held.age().as_millis()
            ),
        },
        Ok(Some(why)) => why,
        Err(e) => {
            release(bucket, held).await;
            return Err(e);
        }
    };
    release(bucket, held).await;
    Ok(Err(Retry::Again(why)))
}

/// The checks before the write, made once our lease record is written: the closures the new
/// manifest names are in the bucket ([`WriteError::Missing`] if not), and the live manifest
/// is still the one read (`Some(why)` if not).
async fn check(
    bucket: &impl Bucket,
    current: Option<&Current>,
    planned: &Planned,
) -> Result<Option<String>, WriteError> {
    let (missing, now) = tokio::join!(missing(bucket, planned), bucket.get(MANIFEST_KEY, None));
    let missing = missing?;
    if !missing.is_empty() {
        return Err(WriteError::Missing(missing));
    }
    let now = now.with_context(|| format!("reading {MANIFEST_KEY}"))?;
    Ok((!unchanged(current, &now))
        .then(|| format!("{MANIFEST_KEY} was replaced since this command read it")))
}

/// Writes the manifest while `held`, within `deadline`, and gives the lease back (read beside
/// the write: see [`give_back`]) unless the write did not answer in time; then the lease is
/// kept until it lapses, so nobody else writes while that request may still land.
async fn write_holding(
    bucket: &impl Bucket,
    held: Held,
    current: Option<&Current>,
    planned: &Planned,
    conditional: bool,
    deadline: Duration,
    archived: Option<String>,
) -> Result<Result<Option<String>, Retry>, WriteError> {
    let bytes = planned.bytes.clone();
    let write = async {
        match (conditional, current) {
            (true, None) => {
                bucket
                    .put_if(MANIFEST_KEY, bytes, PutCondition::IfAbsent)
                    .await
            }
            (
                true,
                Some(Current {
                    etag: Some(etag), ..
                }),
            ) => {
                bucket
                    .put_if(MANIFEST_KEY, bytes, PutCondition::IfMatch(etag.clone()))
                    .await
            }
            // No conditional writes (or no ETag): the lease and the byte check decide.
            _ => bucket
                .put(MANIFEST_KEY, bytes)
                .await
                .map(|()| PutOutcome::Written),
        }
    };
    let (written, record) =
        tokio::join!(tokio::time::timeout(deadline, write), read_record(bucket));
    let outcome = match written {
        Err(_) => {
            return Err(WriteError::Other(anyhow::anyhow!(
                "writing {MANIFEST_KEY} did not finish within {} ms, while the lease still held; it may still land. Check with `ferry show`, then run again (the lease lapses by itself)",
                deadline.as_millis()
            )));
        }
        Ok(outcome) => outcome,
    };
    give_back(bucket, held, record).await;
    match outcome {
        Err(e) => Err(WriteError::Other(
            anyhow::Error::new(e).context(format!("writing {MANIFEST_KEY}")),
        )),
        Ok(PutOutcome::PreconditionFailed) => Ok(Err(Retry::Again(format!(
            "{MANIFEST_KEY} was replaced since this command read it"
        )))),
        Ok(PutOutcome::Written) => Ok(Ok(archived)),
    }
}

/// The store paths (by narinfo) and objects of `planned` that are not in the bucket.
async fn missing(bucket: &impl Bucket, planned: &Planned) -> anyhow::Result<Vec<String>> {
    let mut wanted: Vec<(String, String)> = Vec::new();
    for path in &planned.store_paths {
        let key = narinfo_key(path).with_context(|| format!("{path} is not a store path"))?;
        wanted.push((key, path.clone()));
    }
    wanted.extend(planned.objects.iter().map(|o| (o.clone(), o.clone())));
    let found: Vec<Option<String>> = stream::iter(wanted)
        .map(|(key, name)| async move {
            let there = bucket
                .exists(&key)
                .await
                .with_context(|| format!("checking {key}"))?;
            Ok::<_, anyhow::Error>((!there).then_some(name))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_compares_bytes_and_presence() {
        let prev = Current {
            bytes: b"m1".to_vec(),
            etag: Some("\"e\"".into()),
        };
        let found = |b: &[u8]| Fetched::Found {
            bytes: b.to_vec(),
            etag: None,
        };
        assert!(unchanged(None, &Fetched::Missing));
        assert!(!unchanged(None, &found(b"m1")));
        assert!(unchanged(Some(&prev), &found(b"m1")));
        assert!(!unchanged(Some(&prev), &found(b"m2")));
        assert!(!unchanged(Some(&prev), &Fetched::Missing));
        assert!(!unchanged(Some(&prev), &Fetched::Unchanged));
    }
}
