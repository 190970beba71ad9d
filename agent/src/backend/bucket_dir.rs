//! A `file://` bucket: a local directory with the bucket's layout. ETags are derived from
//! size and modification time, which is what a conditional GET needs.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use super::bucket::{Bucket, BucketError, Fetched};

/// A directory used as the bucket.
#[derive(Debug)]
pub struct DirBucket {
    root: PathBuf,
    requests: AtomicU64,
}

impl DirBucket {
    /// A bucket rooted at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            requests: AtomicU64::new(0),
        }
    }

    /// The directory (used directly as a `file://` binary cache by `nix copy`).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Bucket for DirBucket {
    async fn get(&self, key: &str, if_none_match: Option<&str>) -> Result<Fetched, BucketError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let rel = Path::new(key);
        if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Ok(Fetched::Missing);
        }
        let path = self.root.join(rel);
        let meta = match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(Fetched::Missing),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if tokio::fs::metadata(&self.root).await.is_err() {
                    return Err(BucketError::Unreachable(format!(
                        "bucket directory {} is missing",
                        self.root.display()
                    )));
                }
                return Ok(Fetched::Missing);
            }
            Err(e) => return Err(BucketError::Refused(format!("{}: {e}", path.display()))),
        };
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let etag = format!("\"{:x}-{:x}\"", meta.len(), mtime);
        if if_none_match == Some(etag.as_str()) {
            return Ok(Fetched::NotModified);
        }
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| BucketError::Refused(format!("{}: {e}", path.display())))?;
        Ok(Fetched::Object {
            bytes,
            etag: Some(etag),
        })
    }

    fn direct_cache_url(&self) -> Option<String> {
        Some(format!("file://{}", self.root.display()))
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conditional_get_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.json"), b"{}").unwrap();
        let b = DirBucket::new(dir.path().to_owned());
        let Fetched::Object { bytes, etag } = b.get("manifest.json", None).await.unwrap() else {
            panic!("expected object")
        };
        assert_eq!(bytes, b"{}");
        let etag = etag.unwrap();
        assert_eq!(
            b.get("manifest.json", Some(&etag)).await.unwrap(),
            Fetched::NotModified
        );
        assert_eq!(b.get("nope", None).await.unwrap(), Fetched::Missing);
        assert_eq!(
            b.get("../etc/passwd", None).await.unwrap(),
            Fetched::Missing
        );
        assert_eq!(b.requests(), 4);
        let gone = DirBucket::new(dir.path().join("absent"));
        assert!(matches!(
            gone.get("manifest.json", None).await,
            Err(BucketError::Unreachable(_))
        ));
    }
}
