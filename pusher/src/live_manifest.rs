//! The live manifest in the bucket: reading it (with the ETag a later conditional write
//! compares against) and archiving it. Replacing it goes through `manifest_write.rs`: the
//! current one is archived first, the new one written last (one PUT, so readers see the old
//! manifest or the new, never a mix) and only if nobody changed it meanwhile.

use anyhow::{Context, Result, bail};
use chrono::{SecondsFormat, Utc};
use ferry_bucket::{Bucket, Fetched};
use ferry_schema::layout::{ARCHIVE_PREFIX, MANIFEST_KEY, archive_key, invalid_archive_key};
use ferry_schema::{DEFAULT_SIZE_CAP, Manifest, validate_bytes};

use crate::manifest_write::Current;

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

impl Live {
    /// The bytes and ETag, as a write compares against them.
    pub fn current(&self) -> Current {
        Current {
            bytes: self.bytes.clone(),
            etag: self.etag.clone(),
        }
    }
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

/// Where `current` goes when it is replaced: `manifests/manifest-<generation>.json` for a
/// valid manifest (the same generation always has the same bytes, so writing it again is
/// harmless), `manifests/invalid-<now>.json` for bytes that do not validate.
pub fn archive_key_of(current: &Current) -> String {
    match validate_bytes(&current.bytes, DEFAULT_SIZE_CAP) {
        Ok(v) => archive_key(&v.manifest.generation),
        Err(_) => invalid_archive_key(&Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
    }
}

/// Archives `current` (the bytes read, not whatever `manifest.json` holds by now) under
/// [`archive_key_of`]; returns the key.
pub async fn archive_current(bucket: &impl Bucket, current: &Current) -> Result<String> {
    let key = archive_key_of(current);
    bucket
        .put(&key, current.bytes.clone())
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
