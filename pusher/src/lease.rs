//! The manifest lease: the record kept in `manifest.lease` and the pure decisions about it.
//! `manifest_write.rs` (manifest writers) and `ferry gc` (its delete batches) do the I/O.
//! Holding it is what keeps a write of `manifest.json` and a gc deletion from interleaving.
//!
//! The protocol: read the lease; if another holder's lease is still young, wait or give
//! up. Else write our own record and make sure it is ours: on a store with conditional
//! writes the lease is created with `If-None-Match: *` (or replaces a stale one with
//! `If-Match`), which the store makes atomic; elsewhere (Garage) we wait a settle time
//! and read it back. Then do the work and delete the lease, if it is still ours.
//!
//! Reads made after our record is written may run during the settle time (a writer's checks
//! of the manifest and the cache do): every other writer changes the bucket only while it
//! holds a confirmed lease, and a read-back that finds our record after the settle means
//! no other writer confirmed one since our record was written (by the argument below, under
//! the same bounded delays), so those reads still stand. When the read-back finds another
//! record, they are thrown away with the attempt.
//!
//! Age is judged by the store's clock: the `Date` of the answer minus the lease object's
//! `Last-Modified` ([`ferry_bucket::Bucket::get_timed`]), against the TTL the holder wrote
//! (its `expires - acquired`, a difference on one clock). So writers whose clocks disagree
//! by minutes still agree on when a lease lapses. HTTP dates are whole seconds, so a lease
//! counts as stale only a second after its TTL.
//!
//! What this can and cannot guarantee. Without conditional writes the store cannot refuse
//! a write, so the lease is advisory and holds only under bounded delays:
//! - Two writers that race for a free lease both write it; the store keeps the last write,
//!   and after the settle both read the same record, so one goes on and the other gives up.
//! - A writer could still overwrite a lease someone already confirmed if its own read and
//!   write were separated by more than the settle time (a stalled process, a slow
//!   network). A writer whose read-to-write took longer than half the settle time gives up
//!   instead of trusting its read-back (see [`confirm`]), which closes that window as long
//!   as the read-back itself is not delayed by more than the other half.
//! - A holder's lease is good for its TTL from the moment it *started* writing it (the
//!   store's `Last-Modified` is later). Before the final `manifest.json` write the holder
//!   checks that enough of it is left ([`write_deadline`]) and gives the write a deadline
//!   inside it. What no lease on a plain S3 store can prevent is a request that the client
//!   gave up on but that reaches the store long afterwards: there is no fencing token the
//!   store could check.
//!
//! On a store with conditional writes (AWS S3, MinIO, a `file://` directory) taking the
//! lease is atomic and the manifest write itself is conditional, so none of the above
//! applies; the lease is there so that `ferry gc` and the writers exclude each other.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The lease object's key.
pub const LEASE_KEY: &str = "manifest.lease";

/// How long a lease is valid: long enough for the checks and the write on a slow link.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// How long to wait after writing the lease before reading it back.
pub const SETTLE: Duration = Duration::from_millis(500);

/// The resolution of HTTP dates: an age read from them may be off by this much.
pub const CLOCK_RESOLUTION: Duration = Duration::from_secs(1);

/// The lease's timings (tests shorten them; both sides of a test must use the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a lease is valid.
    pub ttl: Duration,
    /// The wait before reading a lease back on a store without conditional writes.
    pub settle: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        Self {
            ttl: LEASE_TTL,
            settle: SETTLE,
        }
    }
}

/// The lease record, as JSON in [`LEASE_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseRecord {
    /// Who holds it: `host:pid:nonce`, unique per run.
    pub holder: String,
    /// What the holder is doing (`ferry push web`), for the message others see.
    pub purpose: String,
    /// When it was taken.
    pub acquired: DateTime<Utc>,
    /// When it lapses; after this anyone may take it over.
    pub expires: DateTime<Utc>,
}

impl LeaseRecord {
    /// A fresh record for `holder`, taken `now`, valid for `ttl`.
    pub fn new(holder: &str, purpose: &str, now: DateTime<Utc>, ttl: Duration) -> Self {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(30));
        Self {
            holder: holder.to_owned(),
            purpose: purpose.to_owned(),
            acquired: now,
            expires: now + ttl,
        }
    }

    /// The record as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings and timestamps always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored record; `None` when it is not one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// The TTL the holder gave it: `expires - acquired`, both on the holder's clock, so the
    /// difference does not depend on that clock being right. A record whose difference is
    /// negative or absurd counts as the default TTL.
    pub fn ttl(&self) -> Duration {
        (self.expires - self.acquired)
            .to_std()
            .ok()
            .filter(|t| *t <= Duration::from_secs(3600))
            .unwrap_or(LEASE_TTL)
    }
}

/// What to do about the lease found before taking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// No lease: take it.
    Take,
    /// A lease older than its TTL: take it over (and say so).
    TakeOverStale(LeaseRecord),
    /// Another writer holds it for about `left` more.
    Busy {
        /// Its record.
        record: LeaseRecord,
        /// How long it stays valid at most.
        left: Duration,
    },
    /// Something that is not a lease record sits at the key: stop and ask the user.
    Unreadable,
}

/// A lease as read: its bytes and its age by the store's clock (`None`: the store gave no
/// dates).
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    /// The stored record.
    pub bytes: &'a [u8],
    /// Its age by the store's clock.
    pub age: Option<Duration>,
}

/// Decides from the stored lease (`None`: no object) whether `me` may take it. Its age by
/// the store's clock decides; only a store that gives no dates falls back to comparing
/// the record's `expires` with the local clock `now`.
pub fn decide(found: Option<Found<'_>>, me: &str, now: DateTime<Utc>) -> Acquire {
    let Some(found) = found else {
        return Acquire::Take;
    };
    let Some(record) = LeaseRecord::parse(found.bytes) else {
        return Acquire::Unreadable;
    };
    if record.holder == me {
        return Acquire::Take;
    }
    let left = match found.age {
        Some(age) => (record.ttl() + CLOCK_RESOLUTION).saturating_sub(age),
        None => (record.expires - now).to_std().unwrap_or(Duration::ZERO),
    };
    if left.is_zero() {
        Acquire::TakeOverStale(record)
    } else {
        Acquire::Busy { record, left }
    }
}

/// The read-back after the settle time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    /// The lease is ours: go on.
    Held,
    /// Another writer's record replaced ours (or none is there): give up without deleting it.
    Lost(Option<LeaseRecord>),
    /// Our own read-to-write took so long that we may have overwritten a lease someone had
    /// already confirmed: give up (and delete ours).
    TooSlow(Duration),
}

/// Decides from the read-back whether `me` holds the lease; `took` is the time from
/// sending the first read to the lease write completing, `settle` the wait after it.
pub fn confirm(found: Option<&[u8]>, me: &str, took: Duration, settle: Duration) -> Confirm {
    let record = found.and_then(LeaseRecord::parse);
    match record {
        Some(r) if r.holder == me => {
            if took > settle / 2 {
                Confirm::TooSlow(took)
            } else {
                Confirm::Held
            }
        }
        other => Confirm::Lost(other),
    }
}

/// The deadline for the final write under a lease of `ttl` whose write *started*
/// `elapsed` ago, or `None` when too little of it is left to start a write. Others see
/// the lease lapse no earlier than `ttl` after that start (the store's `Last-Modified` is
/// later still); a tenth of the TTL stays unused as a margin, and a write needs at least
/// another tenth.
pub fn write_deadline(ttl: Duration, elapsed: Duration) -> Option<Duration> {
    let deadline = ttl.checked_sub(elapsed)?.checked_sub(ttl / 10)?;
    (deadline >= ttl / 10).then_some(deadline)
}

/// A holder id unique to this run: host, process and a nanosecond nonce.
pub fn holder_id(host: &str, pid: u32, nonce: u128) -> String {
    format!("{host}:{pid}:{nonce:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn record_round_trips_and_expires_after_the_ttl() {
        let r = LeaseRecord::new("h:1:a", "ferry push web", at("2026-01-01T10:00:00Z"), TTL);
        assert_eq!(r.expires, at("2026-01-01T10:00:30Z"));
        assert_eq!(r.ttl(), TTL);
        let bytes = r.to_bytes();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"holder":"h:1:a","purpose":"ferry push web","acquired":"2026-01-01T10:00:00Z","expires":"2026-01-01T10:00:30Z"}"#
        );
        assert_eq!(LeaseRecord::parse(&bytes), Some(r));
        assert_eq!(LeaseRecord::parse(b"{\"holder\":1}"), None);
        let short = LeaseRecord::new("h", "p", at("2026-01-01T10:00:00Z"), Duration::from_secs(3));
        assert_eq!(short.ttl(), Duration::from_secs(3));
        let mut odd = short.clone();
        odd.expires = odd.acquired - chrono::Duration::seconds(5);
        assert_eq!(odd.ttl(), LEASE_TTL, "a negative TTL counts as the default");
    }

    #[test]
    fn decide_judges_age_by_the_store_clock_not_the_record_times() {
        let local_now = at("2026-01-01T10:00:10Z");
        fn found(bytes: &[u8], secs: u64) -> Option<Found<'_>> {
            Some(Found {
                bytes,
                age: Some(Duration::from_secs(secs)),
            })
        }
        assert_eq!(decide(None, "me", local_now), Acquire::Take);
        let theirs = LeaseRecord::new("them", "ferry push api", at("2026-01-01T10:00:00Z"), TTL);
        let b = theirs.to_bytes();
        assert_eq!(
            decide(found(&b, 10), "me", local_now),
            Acquire::Busy {
                record: theirs.clone(),
                left: Duration::from_secs(21)
            }
        );
        // Stale only a clock resolution after the TTL (HTTP dates are whole seconds).
        assert!(matches!(
            decide(found(&b, 30), "me", local_now),
            Acquire::Busy { .. }
        ));
        assert_eq!(
            decide(found(&b, 31), "me", local_now),
            Acquire::TakeOverStale(theirs.clone())
        );
        // A holder whose clock is an hour slow wrote a record that "expired" long ago by
        // our clock; the store says it is 2 s old: it holds.
        let slow = LeaseRecord::new("slow", "p", at("2026-01-01T09:00:00Z"), TTL);
        assert!(matches!(
            decide(found(&slow.to_bytes(), 2), "me", local_now),
            Acquire::Busy { .. }
        ));
        // A holder whose clock is an hour fast: stale once the store says so.
        let fast = LeaseRecord::new("fast", "p", at("2026-01-01T11:00:00Z"), TTL);
        assert!(matches!(
            decide(found(&fast.to_bytes(), 40), "me", local_now),
            Acquire::TakeOverStale(_)
        ));
        // The holder's own TTL counts.
        let short = LeaseRecord::new("s", "p", at("2026-01-01T10:00:00Z"), Duration::from_secs(3));
        assert!(matches!(
            decide(found(&short.to_bytes(), 5), "me", local_now),
            Acquire::TakeOverStale(_)
        ));
        let mine = LeaseRecord::new("me", "ferry push web", at("2026-01-01T10:00:00Z"), TTL);
        assert_eq!(
            decide(found(&mine.to_bytes(), 1), "me", local_now),
            Acquire::Take
        );
        assert_eq!(
            decide(found(b"garbage", 1), "me", local_now),
            Acquire::Unreadable
        );
    }

    #[test]
    fn without_store_dates_decide_falls_back_to_the_record_expiry() {
        let theirs = LeaseRecord::new("them", "p", at("2026-01-01T10:00:00Z"), TTL);
        let b = theirs.to_bytes();
        let found = Some(Found {
            bytes: &b,
            age: None,
        });
        assert_eq!(
            decide(found, "me", at("2026-01-01T10:00:10Z")),
            Acquire::Busy {
                record: theirs.clone(),
                left: Duration::from_secs(20)
            }
        );
        assert_eq!(
            decide(found, "me", at("2026-01-01T10:00:30Z")),
            Acquire::TakeOverStale(theirs)
        );
    }

    #[test]
    fn confirm_needs_our_record_and_a_quick_write() {
        let now = at("2026-01-01T10:00:00Z");
        let mine = LeaseRecord::new("me", "p", now, TTL).to_bytes();
        let theirs = LeaseRecord::new("them", "p", now, TTL);
        let quick = Duration::from_millis(20);
        assert_eq!(confirm(Some(&mine), "me", quick, SETTLE), Confirm::Held);
        assert_eq!(
            confirm(Some(&theirs.to_bytes()), "me", quick, SETTLE),
            Confirm::Lost(Some(theirs))
        );
        assert_eq!(confirm(None, "me", quick, SETTLE), Confirm::Lost(None));
        assert_eq!(
            confirm(Some(b"junk"), "me", quick, SETTLE),
            Confirm::Lost(None)
        );
        let slow = SETTLE / 2 + Duration::from_millis(1);
        assert_eq!(
            confirm(Some(&mine), "me", slow, SETTLE),
            Confirm::TooSlow(slow)
        );
    }

    #[test]
    fn the_final_write_needs_a_fifth_of_the_lease_left() {
        assert_eq!(
            write_deadline(TTL, Duration::from_secs(1)),
            Some(Duration::from_secs(26))
        );
        assert_eq!(
            write_deadline(TTL, Duration::from_secs(24)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(write_deadline(TTL, Duration::from_millis(24_001)), None);
        assert_eq!(write_deadline(TTL, Duration::from_secs(40)), None);
    }

    #[test]
    fn holder_ids_name_host_and_process() {
        assert_eq!(holder_id("dev", 42, 255), "dev:42:ff");
    }
}
