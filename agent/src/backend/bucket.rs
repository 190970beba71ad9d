//! The agent's read-only view of the bucket: the conditional GET the tick and the cache proxy
//! need, the request count, and where `nix copy` can read the cache directly. The stores
//! themselves (S3, directory) are `ferry-bucket`'s; this narrow trait keeps writes out of
//! the agent and lets apply tests use a fake without implementing a whole object store.

use std::future::Future;

pub use ferry_bucket::{BucketError, Fetched, ObjectReader};

/// Read access to the bucket.
pub trait ReadBucket: Send + Sync + 'static {
    /// GET `key`; with `if_none_match`, a matching ETag gives [`Fetched::Unchanged`].
    fn get(
        &self,
        key: &str,
        if_none_match: Option<&str>,
    ) -> impl Future<Output = Result<Fetched, BucketError>> + Send;

    /// GET `key` like [`ReadBucket::get`] but holding at most `limit` bytes of it (the
    /// manifest, whose size the bucket's writer controls): see
    /// [`ferry_bucket::Bucket::get_bounded`]. The default reads whole, then checks.
    fn get_bounded(
        &self,
        key: &str,
        if_none_match: Option<&str>,
        limit: u64,
    ) -> impl Future<Output = Result<Fetched, BucketError>> + Send {
        async move { ferry_bucket::within_limit(key, limit, self.get(key, if_none_match).await?) }
    }

    /// GET `key` as a reader over its bytes as they arrive (the cache proxy streams NARs
    /// through it instead of holding them); `None` when missing. The default reads the
    /// whole object with [`ReadBucket::get`].
    fn get_reader(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<ObjectReader>, BucketError>> + Send {
        async move {
            Ok(match self.get(key, None).await? {
                Fetched::Found { bytes, .. } => Some(ObjectReader {
                    len: Some(bytes.len() as u64),
                    body: Box::pin(std::io::Cursor::new(bytes)),
                }),
                Fetched::Missing | Fetched::Unchanged => None,
            })
        }
    }

    /// A binary-cache URL `nix copy` can read directly, when there is one (`file://` buckets);
    /// `None` means serve the bucket through the loopback cache proxy.
    fn direct_cache_url(&self) -> Option<String> {
        None
    }

    /// Requests made so far (for reports and benchmarks: a no-op tick makes one).
    fn requests(&self) -> u64;
}

/// Every `ferry-bucket` store reads through its own GET; only [`ReadBucket::get`] is
/// reachable from the agent.
impl<T: ferry_bucket::Bucket + 'static> ReadBucket for T {
    async fn get(&self, key: &str, if_none_match: Option<&str>) -> Result<Fetched, BucketError> {
        ferry_bucket::Bucket::get(self, key, if_none_match).await
    }

    async fn get_bounded(
        &self,
        key: &str,
        if_none_match: Option<&str>,
        limit: u64,
    ) -> Result<Fetched, BucketError> {
        ferry_bucket::Bucket::get_bounded(self, key, if_none_match, limit).await
    }

    async fn get_reader(&self, key: &str) -> Result<Option<ObjectReader>, BucketError> {
        ferry_bucket::Bucket::get_reader(self, key).await
    }

    fn requests(&self) -> u64 {
        ferry_bucket::Bucket::requests(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_bucket::DirBucket;

    /// The agent reads a `ferry-bucket` directory store through the narrow trait: ETag
    /// round trip, missing key, and one counted request per GET.
    #[tokio::test]
    async fn dir_store_reads_through_the_narrow_trait() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.json"), b"{}").unwrap();
        let b = DirBucket::new(dir.path().to_owned());
        let Fetched::Found { bytes, etag } =
            ReadBucket::get(&b, "manifest.json", None).await.unwrap()
        else {
            panic!("expected the object")
        };
        assert_eq!(bytes, b"{}");
        assert_eq!(
            ReadBucket::get(&b, "manifest.json", etag.as_deref())
                .await
                .unwrap(),
            Fetched::Unchanged
        );
        assert_eq!(
            ReadBucket::get(&b, "nope", None).await.unwrap(),
            Fetched::Missing
        );
        assert_eq!(ReadBucket::requests(&b), 3);
        assert_eq!(b.direct_cache_url(), None);
        let gone = DirBucket::new(dir.path().join("absent"));
        assert!(matches!(
            ReadBucket::get(&gone, "manifest.json", None).await,
            Err(BucketError::Unreachable(_))
        ));
    }
}
