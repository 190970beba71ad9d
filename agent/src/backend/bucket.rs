//! The `Bucket` trait: read objects by key, with a conditional GET for the manifest.

use std::future::Future;

use thiserror::Error;

/// The result of a (conditional) GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The object, with its ETag when the store gives one.
    Object {
        /// Content.
        bytes: Vec<u8>,
        /// ETag, passed back as `If-None-Match` next time.
        etag: Option<String>,
    },
    /// The ETag still matches (HTTP 304).
    NotModified,
    /// No such key.
    Missing,
}

/// Why a bucket read failed.
#[derive(Debug, Error)]
pub enum BucketError {
    /// The bucket could not be reached after retries (network, DNS, 5xx, timeout). Running
    /// services are not affected.
    #[error("bucket unreachable: {0}")]
    Unreachable(String),
    /// The bucket answered but refused (credentials, permissions, bad bucket name).
    #[error("bucket refused the request: {0}; check the credentials and bucket in agent.toml")]
    Refused(String),
}

/// Read access to the bucket.
pub trait Bucket: Send + Sync + 'static {
    /// GET `key`; with `if_none_match`, a matching ETag gives [`Fetched::NotModified`].
    fn get(
        &self,
        key: &str,
        if_none_match: Option<&str>,
    ) -> impl Future<Output = Result<Fetched, BucketError>> + Send;

    /// A binary-cache URL `nix copy` can read directly, when there is one (`file://` buckets);
    /// `None` means serve the bucket through the loopback cache proxy.
    fn direct_cache_url(&self) -> Option<String> {
        None
    }

    /// Requests made so far (for reports and benchmarks: a no-op tick makes one).
    fn requests(&self) -> u64;
}
