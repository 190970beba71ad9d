//! Writing `manifest.json` without losing a concurrent writer's change. Where the store
//! honours conditional PUTs the write carries `If-Match` with the ETag read at the start
//! (`If-None-Match: *` when there was no manifest); elsewhere (Garage) it happens under the
//! lease of `lease.rs`, after checking that the live manifest still has the bytes read at
//! the start. Either way a lost race ends in [`CONFLICT`] with nothing written to
//! `manifest.json` (the archive copy of the previous manifest is harmless).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use ferry_bucket::{Bucket, Fetched, PutCondition, PutOutcome};
use ferry_schema::layout::MANIFEST_KEY;

use crate::lease::{
    Acquire, Confirm, LEASE_KEY, LeaseRecord, LeaseTimings, confirm, decide, holder_id,
};
use crate::live_manifest::{Live, archive};

/// The message of a lost race; scripts and tests look for it.
pub const CONFLICT: &str = "the manifest changed while pushing — run again";

/// Settings of a manifest write (tests shorten the lease).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// The lease's timings.
    pub lease: LeaseTimings,
}

/// How the manifest gets written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// One conditional PUT.
    Conditional(PutCondition),
    /// Under the lease, after comparing bytes.
    Lease,
}

/// Picks the write mode: conditional when the store honours it and, for a replacement, gave
/// an ETag to condition on.
pub fn write_mode(conditional_writes: bool, previous: Option<&Live>) -> WriteMode {
    if !conditional_writes {
        return WriteMode::Lease;
    }
    match previous {
        None => WriteMode::Conditional(PutCondition::IfAbsent),
        Some(Live {
            etag: Some(etag), ..
        }) => WriteMode::Conditional(PutCondition::IfMatch(etag.clone())),
        Some(_) => WriteMode::Lease,
    }
}

/// Whether the live manifest found now is still the one read at the start.
pub fn unchanged(previous: Option<&Live>, now: &Fetched) -> bool {
    match (previous, now) {
        (None, Fetched::Missing) => true,
        (Some(p), Fetched::Found { bytes, .. }) => *bytes == p.bytes,
        _ => false,
    }
}

/// Archives `previous` and writes `bytes` as `manifest.json`, unless someone changed the
/// live manifest since `previous` was read.
pub async fn write_manifest(
    bucket: &impl Bucket,
    previous: Option<&Live>,
    bytes: Vec<u8>,
    purpose: &str,
    options: &WriteOptions,
) -> Result<()> {
    let conditional = bucket
        .conditional_writes()
        .await
        .context("checking whether the bucket honours conditional writes")?;
    match write_mode(conditional, previous) {
        WriteMode::Conditional(condition) => {
            if let Some(prev) = previous {
                archive(bucket, prev).await?;
            }
            let outcome = bucket
                .put_if(MANIFEST_KEY, bytes, condition)
                .await
                .with_context(|| format!("writing {MANIFEST_KEY}"))?;
            if outcome == PutOutcome::PreconditionFailed {
                bail!("{CONFLICT} ({MANIFEST_KEY} was replaced since this command read it)");
            }
            Ok(())
        }
        WriteMode::Lease => write_under_lease(bucket, previous, bytes, purpose, options).await,
    }
}

/// This run's lease holder id.
fn me() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    holder_id(&host, std::process::id(), nonce)
}

async fn read_lease(bucket: &impl Bucket) -> Result<Option<Vec<u8>>> {
    match bucket
        .get(LEASE_KEY, None)
        .await
        .with_context(|| format!("reading {LEASE_KEY}"))?
    {
        Fetched::Found { bytes, .. } => Ok(Some(bytes)),
        Fetched::Missing | Fetched::Unchanged => Ok(None),
    }
}

async fn write_under_lease(
    bucket: &impl Bucket,
    previous: Option<&Live>,
    bytes: Vec<u8>,
    purpose: &str,
    options: &WriteOptions,
) -> Result<()> {
    let timings = options.lease;
    let me = me();
    let started = Instant::now();
    let found = read_lease(bucket).await?;
    match decide(found.as_deref(), &me, Utc::now()) {
        Acquire::Take => {}
        Acquire::TakeOverStale(old) => eprintln!(
            "taking over the stale {LEASE_KEY} of {} (`{}`, expired at {}); that run did not finish its write",
            old.holder, old.purpose, old.expires
        ),
        Acquire::Busy(other) => bail!(
            "{CONFLICT} ({} is writing it: `{}`, {LEASE_KEY} until {}; if that run was killed, run again after that time)",
            other.holder,
            other.purpose,
            other.expires
        ),
        Acquire::Unreadable => bail!(
            "{LEASE_KEY} in the bucket is not a ferry lease; if no ferry is writing the manifest, delete it and run again"
        ),
    }
    bucket
        .put(
            LEASE_KEY,
            LeaseRecord::new(&me, purpose, Utc::now(), timings.ttl).to_bytes(),
        )
        .await
        .with_context(|| format!("writing {LEASE_KEY}"))?;
    let took = started.elapsed();
    tokio::time::sleep(timings.settle).await;
    match confirm(
        read_lease(bucket).await?.as_deref(),
        &me,
        took,
        timings.settle,
    ) {
        Confirm::Held => {}
        Confirm::Lost(other) => {
            let who = other.map_or_else(|| "another ferry".to_owned(), |o| o.holder);
            bail!("{CONFLICT} ({who} took {LEASE_KEY} at the same moment)");
        }
        Confirm::TooSlow(took) => {
            release(bucket).await;
            bail!(
                "{CONFLICT} (taking {LEASE_KEY} took {} ms, too slow to be sure no other ferry held it)",
                took.as_millis()
            );
        }
    }
    let result = write_holding_lease(bucket, previous, bytes).await;
    release(bucket).await;
    result
}

async fn write_holding_lease(
    bucket: &impl Bucket,
    previous: Option<&Live>,
    bytes: Vec<u8>,
) -> Result<()> {
    let now = bucket
        .get(MANIFEST_KEY, None)
        .await
        .with_context(|| format!("reading {MANIFEST_KEY}"))?;
    if !unchanged(previous, &now) {
        bail!("{CONFLICT} ({MANIFEST_KEY} was replaced since this command read it)");
    }
    if let Some(prev) = previous {
        archive(bucket, prev).await?;
    }
    bucket
        .put(MANIFEST_KEY, bytes)
        .await
        .with_context(|| format!("writing {MANIFEST_KEY}"))
}

/// Deletes our lease; on failure it lapses by itself within its TTL.
async fn release(bucket: &impl Bucket) {
    if let Err(e) = bucket.delete(LEASE_KEY).await {
        eprintln!("warning: could not delete {LEASE_KEY} ({e}); it lapses by itself in 30 s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(bytes: &[u8], etag: Option<&str>) -> Live {
        let text = include_str!("../../schema/tests/fixtures/example.json");
        Live {
            bytes: bytes.to_vec(),
            etag: etag.map(str::to_owned),
            manifest: serde_json::from_str(text).unwrap(),
        }
    }

    #[test]
    fn mode_is_conditional_only_with_support_and_an_etag() {
        assert_eq!(write_mode(false, None), WriteMode::Lease);
        assert_eq!(
            write_mode(true, None),
            WriteMode::Conditional(PutCondition::IfAbsent)
        );
        let with = live(b"m", Some("\"e1\""));
        assert_eq!(
            write_mode(true, Some(&with)),
            WriteMode::Conditional(PutCondition::IfMatch("\"e1\"".into()))
        );
        assert_eq!(write_mode(false, Some(&with)), WriteMode::Lease);
        assert_eq!(write_mode(true, Some(&live(b"m", None))), WriteMode::Lease);
    }

    #[test]
    fn unchanged_compares_bytes_and_presence() {
        let prev = live(b"m1", Some("\"e\""));
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
