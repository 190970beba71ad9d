//! Fetch step: the conditional GET of `manifest.json`, bounded in size and in time. Reads
//! the bucket; writes nothing. A tick that may apply nothing fetched (no `manifestKeys`, or
//! the boot tick's restore-only fallback) makes no request at all.

use std::time::Duration;

use ferry_schema::layout::MANIFEST_KEY;

use super::TickSettings;
use crate::backend::bucket::{BucketError, Fetched, ReadBucket};
use crate::state::State;

/// What the fetch step gives the verify step.
pub enum FetchOutput {
    /// Nothing was fetched, with the line that says why.
    Skipped(String),
    /// The bucket's answer (a timeout reads as unreachable).
    Answer(Result<Fetched, BucketError>),
}

/// Fetch the manifest for a tick: conditional on the stored manifest's ETag.
pub async fn fetch<B: ReadBucket>(
    settings: &TickSettings,
    state: &State,
    bucket: &B,
) -> FetchOutput {
    // Nothing fetched can be applied, so nothing is fetched.
    if let Some(line) = settings
        .restore_only
        .clone()
        .or_else(|| settings.trust.refuses_everything())
    {
        return FetchOutput::Skipped(line);
    }
    let etag = state.manifest.as_ref().and(state.manifest_etag.as_deref());
    // Within the tick's deadline too, which may come sooner.
    let until = settings.apply.deadline.map(|d| d.at);
    let answer = get_manifest(
        bucket,
        etag,
        settings.size_cap,
        settings.fetch_timeout,
        until,
    )
    .await
    .unwrap_or_else(|| Err(BucketError::Unreachable(timed_out(settings.fetch_timeout))));
    FetchOutput::Answer(answer)
}

/// GET `manifest.json` (conditional on `etag`), holding at most `size_cap` bytes of it, with
/// one deadline for the whole answer: `timeout` from now, or `until` when sooner. `None`: no
/// complete answer in time.
pub async fn get_manifest<B: ReadBucket>(
    bucket: &B,
    etag: Option<&str>,
    size_cap: usize,
    timeout: Duration,
    until: Option<tokio::time::Instant>,
) -> Option<Result<Fetched, BucketError>> {
    let fetch = bucket.get_bounded(MANIFEST_KEY, etag, size_cap as u64);
    let deadline = tokio::time::Instant::now() + timeout;
    let until = until.map_or(deadline, |u| u.min(deadline));
    tokio::time::timeout_at(until, fetch).await.ok()
}

/// Why a fetch gave no manifest in time.
pub fn timed_out(timeout: Duration) -> String {
    format!(
        "no complete answer for {MANIFEST_KEY} within {} s (timeouts.fetchSec)",
        timeout.as_secs()
    )
}
