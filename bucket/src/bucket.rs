//! The `Bucket` trait: the few object-store operations Ferry needs, with results that say
//! what happened (unchanged, found, missing) instead of raw HTTP statuses.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime};

use thiserror::Error;

/// The result of a (conditional) GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The ETag passed as `If-None-Match` still matches (HTTP 304).
    Unchanged,
    /// The object, with its ETag when the store gives one.
    Found {
        /// Content.
        bytes: Vec<u8>,
        /// ETag, to pass back as `If-None-Match` next time.
        etag: Option<String>,
    },
    /// No such key.
    Missing,
}

/// An object read together with its age by the store's own clock ([`Bucket::get_timed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    /// Content.
    pub bytes: Vec<u8>,
    /// ETag, when the store gives one.
    pub etag: Option<String>,
    /// How long ago the object was last written, by the store's clock; `None` when the store
    /// gave no dates. HTTP dates are whole seconds, so this may be off by up to a second
    /// either way.
    pub age: Option<Duration>,
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, when the store says.
    pub modified: Option<SystemTime>,
}

/// The condition of a [`Bucket::put_if`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    /// Write only if the object's ETag is still this one (`If-Match`).
    IfMatch(String),
    /// Write only if there is no object yet (`If-None-Match: *`).
    IfAbsent,
}

/// What a [`Bucket::put_if`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The condition held and the object was written.
    Written,
    /// The condition did not hold (HTTP 412, or 409 from a store that saw a concurrent
    /// conditional write); nothing was written.
    PreconditionFailed,
}

/// Why a bucket operation failed.
#[derive(Debug, Error)]
pub enum BucketError {
    /// The bucket could not be reached after retries (network, DNS, 5xx, timeout, missing
    /// directory).
    #[error("bucket unreachable: {0}; check the bucket URL and that the store is up")]
    Unreachable(String),
    /// The bucket answered but refused (credentials, permissions, bad bucket name).
    #[error("bucket refused the request: {0}; check the credentials and the bucket name")]
    Refused(String),
    /// An operation needed an object that does not exist (e.g. the source of a copy).
    #[error("no object {0:?} in the bucket")]
    NotFound(String),
    /// No request was made: the configured credentials are not there (e.g. the file
    /// systemd's `LoadCredential=` reads is missing at boot).
    #[error("no usable S3 credentials: {0}")]
    Credentials(String),
    /// An object is larger than the reader accepts (a manifest over its size cap); only
    /// `limit` bytes and one read past them were taken.
    #[error(
        "{key} is {}, over the size cap of {limit} bytes; not read further",
        match size { Some(n) => format!("{n} bytes"), None => format!("more than {limit} bytes") }
    )]
    TooLarge {
        /// The object.
        key: String,
        /// The cap.
        limit: u64,
        /// Its size when the store announced it (`Content-Length`, file size).
        size: Option<u64>,
    },
    /// A local file could not be read (the source of [`Bucket::put_file`]).
    #[error("reading {path}: {source}")]
    LocalFile {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// An object being read: its size when the store says, and its bytes as they arrive.
pub struct ObjectReader {
    /// Size in bytes (S3's Content-Length, the file's length).
    pub len: Option<u64>,
    /// The bytes.
    pub body: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("len", &self.len)
            .finish()
    }
}

/// `fetched` as it is, or [`BucketError::TooLarge`] when it holds more than `limit` bytes of
/// `key`: the check of a bounded GET that could only read the object whole.
pub fn within_limit(key: &str, limit: u64, fetched: Fetched) -> Result<Fetched, BucketError> {
    match &fetched {
        Fetched::Found { bytes, .. } if bytes.len() as u64 > limit => Err(BucketError::TooLarge {
            key: key.to_owned(),
            limit,
            size: Some(bytes.len() as u64),
        }),
        _ => Ok(fetched),
    }
}

/// Access to one bucket. Implementations count requests for reports and benchmarks.
pub trait Bucket: Send + Sync {
    /// GET `key`; with `if_none_match`, a matching ETag gives [`Fetched::Unchanged`].
    fn get(
        &self,
        key: &str,
        if_none_match: Option<&str>,
    ) -> impl Future<Output = Result<Fetched, BucketError>> + Send;

    /// GET `key` with how long ago it was last written, judged by the store's own clock
    /// (the answer's `Date` minus its `Last-Modified`), so writers whose clocks disagree
    /// still agree on an object's age. `None` when there is no such object. The default
    /// gives no age (a store without dates).
    fn get_timed(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Timed>, BucketError>> + Send {
        async move {
            Ok(match self.get(key, None).await? {
                Fetched::Found { bytes, etag } => Some(Timed {
                    bytes,
                    etag,
                    age: None,
                }),
                Fetched::Missing | Fetched::Unchanged => None,
            })
        }
    }

    /// GET `key` like [`Bucket::get`], but never hold more than `limit` bytes of it: an
    /// announced size over `limit` is refused before the body is read, and reading stops at
    /// the first chunk past `limit` ([`BucketError::TooLarge`] either way). For objects whose
    /// size the writer does not control (the manifest a host fetches). The default reads
    /// the object whole and then checks; the real stores override it.
    fn get_bounded(
        &self,
        key: &str,
        if_none_match: Option<&str>,
        limit: u64,
    ) -> impl Future<Output = Result<Fetched, BucketError>> + Send {
        async move { within_limit(key, limit, self.get(key, if_none_match).await?) }
    }

    /// GET `key` as a reader over its bytes as they arrive, so an object larger than memory
    /// (a NAR) is never held whole; `None` when there is no such object.
    fn get_reader(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<ObjectReader>, BucketError>> + Send;

    /// Whether `key` exists (HEAD).
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool, BucketError>> + Send;

    /// Writes `bytes` to `key`, replacing any object there. Readers see the old object or
    /// the new one, never a part.
    fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<(), BucketError>> + Send;

    /// Writes `bytes` to `key` only if `condition` holds, atomically with respect to other
    /// conditional writers. Only meaningful when [`Bucket::conditional_writes`] is true: a
    /// store that ignores the headers (Garage) writes unconditionally and says
    /// [`PutOutcome::Written`]. A retried request whose first attempt did land may report
    /// [`PutOutcome::PreconditionFailed`] although the object is ours (a false conflict,
    /// never a lost write).
    fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        condition: PutCondition,
    ) -> impl Future<Output = Result<PutOutcome, BucketError>> + Send;

    /// Whether the store honours [`Bucket::put_if`]'s conditions. S3 finds out with a probe
    /// on a scratch object the first time it is asked (a few requests, then cached for the
    /// life of this value); a directory always does.
    fn conditional_writes(&self) -> impl Future<Output = Result<bool, BucketError>> + Send;

    /// Writes the contents of a local file to `key` without loading it into memory (S3:
    /// multipart upload for large files).
    fn put_file(
        &self,
        key: &str,
        file: &Path,
    ) -> impl Future<Output = Result<(), BucketError>> + Send;

    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<ObjectInfo>, BucketError>> + Send;

    /// Copies `from` to `to` inside the bucket, byte for byte.
    fn copy(&self, from: &str, to: &str) -> impl Future<Output = Result<(), BucketError>> + Send;

    /// Deletes `key`; deleting a missing key is not an error.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), BucketError>> + Send;

    /// Requests made so far.
    fn requests(&self) -> u64;
}
