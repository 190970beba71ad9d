//! The live manifest in the bucket: reading it (with the ETag a later conditional write
//! compares against), archiving it, and replacing it the safe way — the current one is
//! archived under its generation first, the new one is written last (one PUT, so readers
//! see the old manifest or the new, never a mix) and only if nobody changed it meanwhile
//! (`manifest_write.rs`).

use anyhow::{Context, Result, bail};
use ferry_bucket::{Bucket, Fetched};
use ferry_schema::layout::{ARCHIVE_PREFIX, MANIFEST_KEY, archive_key};
use ferry_schema::{DEFAULT_SIZE_CAP, Manifest, validate_bytes};

use crate::manifest_write::{WriteOptions, write_manifest};

/// The live manifest as stored, and parsed.
#[derive(Debug, Clone)]
pub struct Live {
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// The store's ETag for these bytes, when it gave one.
    pub etag: Option<String>,
    /// The manifest.
    pub manifest: Manifest,
}

/// Parses manifest bytes read from the bucket at `key`.
pub fn parse(bytes: &[u8], key: &str) -> Result<Manifest> {
    match validate_bytes(bytes, DEFAULT_SIZE_CAP) {
        Ok(v) => Ok(v.manifest),
        Err(problems) => {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            bail!(
                "{key} in the bucket is invalid; publish a fixed manifest with `ferry publish`:\n{}",
                list.join("\n")
            )
        }
    }
}

/// Reads the manifest at `key`; `None` when there is none.
pub async fn read(bucket: &impl Bucket, key: &str) -> Result<Option<Live>> {
    match bucket
        .get(key, None)
        .await
        .with_context(|| format!("reading {key}"))?
    {
        Fetched::Found { bytes, etag } => {
            let manifest = parse(&bytes, key)?;
            Ok(Some(Live {
                bytes,
                etag,
                manifest,
            }))
        }
        Fetched::Missing | Fetched::Unchanged => Ok(None),
    }
}

/// Reads `manifest.json`.
pub async fn read_live(bucket: &impl Bucket) -> Result<Option<Live>> {
    read(bucket, MANIFEST_KEY).await
}

/// Writes `live` (the bytes read, not whatever `manifest.json` holds by now) to
/// `manifests/manifest-<its generation>.json`. Harmless even when the write that follows is
/// refused: the same generation always has the same bytes.
pub async fn archive(bucket: &impl Bucket, live: &Live) -> Result<String> {
    let key = archive_key(&live.manifest.generation);
    bucket
        .put(&key, live.bytes.clone())
        .await
        .with_context(|| format!("archiving {MANIFEST_KEY} to {key}"))?;
    Ok(key)
}

/// The bytes Ferry writes for a manifest: pretty JSON and a final newline.
pub fn to_bytes(manifest: &Manifest) -> Result<Vec<u8>> {
    let mut text = serde_json::to_string_pretty(manifest).context("serialising the manifest")?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// Archives `previous` (when there is one), then writes `new` as the live manifest, unless
/// the live manifest is no longer `previous` (then nothing is written to it and the error
/// says to run again). `purpose` names the command for other writers' messages.
pub async fn replace(
    bucket: &impl Bucket,
    previous: Option<&Live>,
    new: &Manifest,
    purpose: &str,
    options: &WriteOptions,
) -> Result<()> {
    write_manifest(bucket, previous, to_bytes(new)?, purpose, options).await
}

/// Archived generations, newest first.
pub async fn archived_generations(bucket: &impl Bucket) -> Result<Vec<String>> {
    let objects = bucket
        .list(ARCHIVE_PREFIX)
        .await
        .with_context(|| format!("listing {ARCHIVE_PREFIX}"))?;
    let mut gens: Vec<String> = objects
        .iter()
        .filter_map(|o| {
            o.key
                .strip_prefix(ARCHIVE_PREFIX)?
                .strip_prefix("manifest-")?
                .strip_suffix(".json")
                .map(str::to_owned)
        })
        .collect();
    // RFC 3339 UTC generations sort by time as text.
    gens.sort_unstable_by(|a, b| b.cmp(a));
    Ok(gens)
}
