//! Taking and giving back `manifest.lease` on a bucket, for the manifest writers
//! (`manifest_write.rs`) and `ferry gc`'s delete batches. The rules live in `lease.rs`;
//! this module does the requests. A lease is claimed (read, then our record written with
//! `If-None-Match: *`, or `If-Match` on the stale lease it replaces) and confirmed: on a
//! store that honours the condition the claim is ours at once; on one that ignores it
//! (Garage) it is left to settle and read back.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use ferry_bucket::{Bucket, Fetched, PutCondition, PutOutcome};
use rand::Rng;

use crate::lease::{
    Acquire, Confirm, Found, LEASE_KEY, LeaseRecord, LeaseTimings, confirm, decide, holder_id,
    write_deadline,
};
use crate::retry::RetryPolicy;

/// A lease this run holds.
#[derive(Debug)]
pub struct Held {
    me: String,
    /// When our lease write was *sent*: others see the lease lapse no earlier than the TTL
    /// after this moment.
    sent: Instant,
    ttl: Duration,
}

impl Held {
    /// The deadline for a write that must land while the lease holds, or `None` when too
    /// little of it is left to start one.
    pub fn deadline(&self) -> Option<Duration> {
        write_deadline(self.ttl, self.sent.elapsed())
    }

    /// How long ago the lease was taken.
    pub fn age(&self) -> Duration {
        self.sent.elapsed()
    }
}

/// Why the lease could not be taken now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// Who holds it (or "another ferry" when the record could not be read).
    pub holder: String,
    /// What the holder is doing.
    pub purpose: String,
    /// How long the holder's lease can still last; zero when another writer took it at the
    /// same moment as we did (try again soon).
    pub left: Duration,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.left.is_zero() {
            write!(f, "{} took {LEASE_KEY} at the same moment", self.holder)
        } else {
            write!(
                f,
                "{} is writing it: `{}`, {LEASE_KEY} held for up to {} s more; if that run was killed, run again after that",
                self.holder,
                self.purpose,
                self.left.as_secs() + 1
            )
        }
    }
}

/// The outcome of [`take`].
#[derive(Debug)]
pub enum Taken {
    /// The lease is ours.
    Held(Held),
    /// Someone else holds it.
    Busy(Busy),
}

/// This run's lease holder id: host, process and a nanosecond nonce.
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

/// The lease record as stored (`None`: no lease).
pub async fn read_record(bucket: &impl Bucket) -> Result<Option<Vec<u8>>> {
    match bucket
        .get(LEASE_KEY, None)
        .await
        .with_context(|| format!("reading {LEASE_KEY}"))?
    {
        Fetched::Found { bytes, .. } => Ok(Some(bytes)),
        Fetched::Missing | Fetched::Unchanged => Ok(None),
    }
}

/// A lease record this run has written but not yet made sure of: on a store without
/// conditional writes another writer may still overwrite it until the settle time is over.
/// Reads made after the claim was written may run during the settle: if [`Claim::confirm`]
/// then finds the lease ours, nobody else held it since the claim was written (`lease.rs`),
/// so what they read still stands.
#[derive(Debug)]
pub struct Claim {
    held: Held,
    /// From sending the first read to the write completing.
    took: Duration,
    /// When the write completed.
    written: Instant,
    /// Whether the write carried its condition (`If-None-Match: *` or `If-Match`): on a store
    /// that honours conditions the claim is then ours already.
    conditioned: bool,
    settle: Duration,
}

/// The outcome of [`claim`].
#[derive(Debug)]
pub enum Claimed {
    /// Our record is written; [`Claim::confirm`] says whether it stays ours.
    Written(Claim),
    /// Someone else holds it.
    Busy(Busy),
}

/// A lease that another writer took at the same moment as we did.
fn same_moment() -> Busy {
    Busy {
        holder: "another ferry".to_owned(),
        purpose: String::new(),
        left: Duration::ZERO,
    }
}

/// Reads the lease and, if it is free (or stale), writes our record for `purpose`. The write
/// carries the condition that makes it atomic where the store honours conditional writes;
/// whether it does (the bucket's probe) is asked only by [`Claim::confirm`], so a claim
/// need not wait for the probe. A store that refuses the condition gets a plain write.
pub async fn claim(bucket: &impl Bucket, purpose: &str, timings: LeaseTimings) -> Result<Claimed> {
    let me = me();
    let started = Instant::now();
    let found = bucket
        .get_timed(LEASE_KEY)
        .await
        .with_context(|| format!("reading {LEASE_KEY}"))?;
    let decision = decide(
        found.as_ref().map(|t| Found {
            bytes: &t.bytes,
            age: t.age,
        }),
        &me,
        Utc::now(),
    );
    match decision {
        Acquire::Take => {}
        Acquire::TakeOverStale(old) => eprintln!(
            "taking over the stale {LEASE_KEY} of {} (`{}`, older than its {} s by the bucket's clock); that run did not finish",
            old.holder,
            old.purpose,
            old.ttl().as_secs()
        ),
        Acquire::Busy { record, left } => {
            return Ok(Claimed::Busy(Busy {
                holder: record.holder,
                purpose: record.purpose,
                left,
            }));
        }
        Acquire::Unreadable => bail!(
            "{LEASE_KEY} in the bucket is not a ferry lease; if no ferry is writing the manifest, delete it and run again"
        ),
    }
    let record = LeaseRecord::new(&me, purpose, Utc::now(), timings.ttl).to_bytes();
    let held = Held {
        me,
        sent: Instant::now(),
        ttl: timings.ttl,
    };
    let condition = match found.and_then(|t| t.etag) {
        Some(etag) => PutCondition::IfMatch(etag),
        None => PutCondition::IfAbsent,
    };
    let conditioned = match bucket.put_if(LEASE_KEY, record.clone(), condition).await {
        Ok(PutOutcome::Written) => true,
        Ok(PutOutcome::PreconditionFailed) => return Ok(Claimed::Busy(same_moment())),
        Err(_) => {
            bucket
                .put(LEASE_KEY, record)
                .await
                .with_context(|| format!("writing {LEASE_KEY}"))?;
            false
        }
    };
    Ok(Claimed::Written(Claim {
        held,
        took: started.elapsed(),
        written: Instant::now(),
        conditioned,
        settle: timings.settle,
    }))
}

impl Claim {
    /// Makes sure the claim is ours: at once where the store honours the condition the
    /// write carried; elsewhere it waits out the settle time and reads the lease back —
    /// [`Taken::Held`] when it is still ours and our read-to-write was quick enough to trust
    /// (`lease.rs`, [`confirm`]).
    pub async fn confirm(self, bucket: &impl Bucket) -> Result<Taken> {
        let atomic = match bucket.conditional_writes().await {
            Ok(conditional) => conditional && self.conditioned,
            Err(e) => {
                release(bucket, self.held).await;
                return Err(anyhow::Error::new(e)
                    .context("checking whether the bucket honours conditional writes"));
            }
        };
        if atomic {
            return Ok(Taken::Held(self.held));
        }
        tokio::time::sleep_until((self.written + self.settle).into()).await;
        let record = match read_record(bucket).await {
            Ok(record) => record,
            Err(e) => {
                release(bucket, self.held).await;
                return Err(e);
            }
        };
        match confirm(record.as_deref(), &self.held.me, self.took, self.settle) {
            Confirm::Held => Ok(Taken::Held(self.held)),
            Confirm::Lost(other) => Ok(Taken::Busy(other.map_or_else(same_moment, |o| Busy {
                holder: o.holder,
                purpose: o.purpose,
                left: Duration::ZERO,
            }))),
            Confirm::TooSlow(took) => {
                release(bucket, self.held).await;
                Ok(Taken::Busy(Busy {
                    holder: format!(
                        "nobody we know of (taking {LEASE_KEY} took {} ms, too slow to be sure no other ferry held it)",
                        took.as_millis()
                    ),
                    purpose: String::new(),
                    left: Duration::ZERO,
                }))
            }
        }
    }

    /// Gives back a claim that will not be used (the command failed before its write, or
    /// claimed early for an upload that turned out large): the record is deleted only if it
    /// is still ours.
    pub async fn abandon(self, bucket: &impl Bucket) {
        release(bucket, self.held).await;
    }
}

/// Gives back a claim made for a write that will not happen (nothing to do for a claim that
/// found the lease busy, or none).
pub async fn abandon(bucket: &impl Bucket, claimed: Option<Claimed>) {
    if let Some(Claimed::Written(claim)) = claimed {
        claim.abandon(bucket).await;
    }
}

/// Tries once to take the lease for `purpose`: [`claim`], then [`Claim::confirm`].
pub async fn take(bucket: &impl Bucket, purpose: &str, timings: LeaseTimings) -> Result<Taken> {
    match claim(bucket, purpose, timings).await? {
        Claimed::Written(claim) => claim.confirm(bucket).await,
        Claimed::Busy(busy) => Ok(Taken::Busy(busy)),
    }
}

/// Gives the lease back: deletes it only if the record there is still ours. A lease that
/// lapsed while we were stalled may have been taken over; then it is left alone. (Between
/// reading it and deleting it, another writer can take it over only if ours lapsed in those
/// milliseconds.)
pub async fn release(bucket: &impl Bucket, held: Held) {
    let record = read_record(bucket).await;
    give_back(bucket, held, record).await;
}

/// [`release`] with the lease as read a moment ago (`read_record`), e.g. beside the write
/// the lease was taken for: that write has a deadline inside the lease, so a record read
/// while it ran is as good as one read after it.
pub async fn give_back(bucket: &impl Bucket, held: Held, record: Result<Option<Vec<u8>>>) {
    let record = match record {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "warning: could not read {LEASE_KEY} to give it back ({e:#}); it lapses by itself in {} s",
                held.ttl.as_secs()
            );
            return;
        }
    };
    match record.as_deref().and_then(LeaseRecord::parse) {
        Some(r) if r.holder == held.me => {
            if let Err(e) = bucket.delete(LEASE_KEY).await {
                eprintln!(
                    "warning: could not delete {LEASE_KEY} ({e}); it lapses by itself in {} s",
                    held.ttl.as_secs()
                );
            }
        }
        Some(r) => eprintln!(
            "note: {LEASE_KEY} is now held by {} (`{}`): ours lapsed after {} s; left it alone",
            r.holder,
            r.purpose,
            held.age().as_secs()
        ),
        None => {}
    }
}

/// Takes the lease, waiting (backoff with jitter, within `retry`) while another holder has
/// it; `Ok(Err(busy))` when it stays held for longer than the retries allow.
pub async fn take_waiting(
    bucket: &impl Bucket,
    purpose: &str,
    timings: LeaseTimings,
    retry: &RetryPolicy,
) -> Result<std::result::Result<Held, Busy>> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let busy = match take(bucket, purpose, timings).await? {
            Taken::Held(held) => return Ok(Ok(held)),
            Taken::Busy(busy) => busy,
        };
        let wait = retry.backoff(attempt, rand::thread_rng().gen_range(0.5..1.5));
        let budget_left = retry.budget.saturating_sub(started.elapsed());
        if attempt >= retry.attempts || busy.left > budget_left || wait > budget_left {
            return Ok(Err(busy));
        }
        tokio::time::sleep(wait).await;
    }
}
