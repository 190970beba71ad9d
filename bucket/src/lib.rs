//! Bucket access shared by `ferry` and (later) `ferry-agent`: the `Bucket` trait, its S3
//! and directory implementations, the bucket URL syntax and [`AnyBucket`] to open either.

// Tests may panic on a broken precondition; the library itself may not.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod any;
pub mod atomic_file;
pub mod bucket;
pub mod dir;
pub mod fault;
pub mod s3;
pub mod url;

pub use any::AnyBucket;
pub use bucket::{
    Bucket, BucketError, Fetched, ObjectInfo, ObjectReader, PutCondition, PutOutcome, Timed,
    within_limit,
};
pub use dir::DirBucket;
pub use s3::{S3Bucket, S3Settings};
pub use url::{BucketUrl, BucketUrlError};
