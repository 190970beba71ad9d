//! The manifest lease for stores that ignore conditional writes (Garage): the record kept in
//! `manifest.lease` and the pure decisions about it. `manifest_write.rs` does the I/O.
//!
//! The protocol: read the lease; if another writer holds an unexpired one, give up. Else
//! write our own record, wait a settle time, read it back, and go on only if it is still
//! ours. Then compare the live manifest with the bytes read at the start, write, and
//! delete the lease.
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
//! - A holder that stalls past the lease's expiry (laptop sleep, a very slow store) can be
//!   taken over while it is still writing; there is no fencing token a plain S3 store could
//!   check. Expiry is judged by the local clock, so clocks must agree to within seconds.
//! - The byte comparison of the live manifest just before the final write catches any
//!   change that landed before it; a change landing in the few milliseconds between that
//!   check and the write is what only a lease held by everyone prevents.
//!
//! Every ferry that writes the manifest takes the lease, so among ferry users a lost change
//! needs one of the stalls above. A store with conditional writes (AWS S3, MinIO, a
//! `file://` directory) does not need any of this: the write itself is refused.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The lease object's key.
pub const LEASE_KEY: &str = "manifest.lease";

/// How long a lease is valid: long enough for read-compare-archive-write on a slow link.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// How long to wait after writing the lease before reading it back.
pub const SETTLE: Duration = Duration::from_millis(500);

/// The lease's timings (tests shorten them; both sides of a test must use the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a lease is valid.
    pub ttl: Duration,
    /// The wait before reading a lease back.
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
}

/// What to do about the lease found before taking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// No lease: take it.
    Take,
    /// A lease whose expiry has passed: take it over (and say so).
    TakeOverStale(LeaseRecord),
    /// Another writer holds it: give up.
    Busy(LeaseRecord),
    /// Something that is not a lease record sits at the key: stop and ask the user.
    Unreadable,
}

/// Decides from the stored lease (`None`: no object) whether `me` may take it at `now`.
pub fn decide(found: Option<&[u8]>, me: &str, now: DateTime<Utc>) -> Acquire {
    let Some(bytes) = found else {
        return Acquire::Take;
    };
    let Some(record) = LeaseRecord::parse(bytes) else {
        return Acquire::Unreadable;
    };
    if record.holder == me {
        Acquire::Take
    } else if record.expires <= now {
        Acquire::TakeOverStale(record)
    } else {
        Acquire::Busy(record)
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
/// sending the first read to the lease write completing.
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

    #[test]
    fn record_round_trips_and_expires_after_the_ttl() {
        let r = LeaseRecord::new(
            "h:1:a",
            "ferry push web",
            at("2026-01-01T10:00:00Z"),
            LEASE_TTL,
        );
        assert_eq!(r.expires, at("2026-01-01T10:00:30Z"));
        let bytes = r.to_bytes();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"holder":"h:1:a","purpose":"ferry push web","acquired":"2026-01-01T10:00:00Z","expires":"2026-01-01T10:00:30Z"}"#
        );
        assert_eq!(LeaseRecord::parse(&bytes), Some(r));
        assert_eq!(LeaseRecord::parse(b"{\"holder\":1}"), None);
    }

    #[test]
    fn decide_takes_a_free_or_stale_lease_and_backs_off_from_a_held_one() {
        let now = at("2026-01-01T10:00:10Z");
        assert_eq!(decide(None, "me", now), Acquire::Take);
        let theirs = LeaseRecord::new(
            "them",
            "ferry push api",
            at("2026-01-01T10:00:00Z"),
            LEASE_TTL,
        );
        assert_eq!(
            decide(Some(&theirs.to_bytes()), "me", now),
            Acquire::Busy(theirs.clone())
        );
        // At and after expiry it is stale.
        assert_eq!(
            decide(Some(&theirs.to_bytes()), "me", at("2026-01-01T10:00:30Z")),
            Acquire::TakeOverStale(theirs.clone())
        );
        let mine = LeaseRecord::new(
            "me",
            "ferry push web",
            at("2026-01-01T10:00:00Z"),
            LEASE_TTL,
        );
        assert_eq!(decide(Some(&mine.to_bytes()), "me", now), Acquire::Take);
        assert_eq!(decide(Some(b"garbage"), "me", now), Acquire::Unreadable);
    }

    #[test]
    fn confirm_needs_our_record_and_a_quick_write() {
        let now = at("2026-01-01T10:00:00Z");
        let mine = LeaseRecord::new("me", "p", now, LEASE_TTL).to_bytes();
        let theirs = LeaseRecord::new("them", "p", now, LEASE_TTL);
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
    fn holder_ids_name_host_and_process() {
        assert_eq!(holder_id("dev", 42, 255), "dev:42:ff");
    }
}
