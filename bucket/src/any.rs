//! [`AnyBucket`]: the bucket a URL names, whichever kind it is (static dispatch over the two
//! real implementations, since the trait's async methods are not object-safe).

use std::path::Path;

use crate::bucket::{
    Bucket, BucketError, Fetched, ObjectInfo, ObjectReader, PutCondition, PutOutcome, Timed,
};
use crate::dir::DirBucket;
use crate::s3::{S3Bucket, S3Settings};
use crate::url::BucketUrl;

/// An S3 or directory bucket.
#[derive(Debug)]
pub enum AnyBucket {
    /// `s3://…`
    S3(S3Bucket),
    /// `file://…`
    Dir(DirBucket),
}

impl AnyBucket {
    /// Opens the bucket `url` names with the default timeouts and the credential chain
    /// (its `profile=` when given). Makes no request.
    pub async fn open(url: &BucketUrl) -> Self {
        match url {
            BucketUrl::Dir(dir) => Self::Dir(DirBucket::new(dir.clone())),
            BucketUrl::S3 {
                bucket,
                endpoint,
                region,
                profile,
            } => Self::S3(
                S3Bucket::new(&S3Settings {
                    bucket: bucket.clone(),
                    endpoint: endpoint.clone(),
                    region: Some(region.clone()),
                    profile: profile.clone(),
                    ..S3Settings::default()
                })
                .await,
            ),
        }
    }
}

macro_rules! both {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            AnyBucket::S3($b) => $e,
            AnyBucket::Dir($b) => $e,
        }
    };
}

impl Bucket for AnyBucket {
    async fn get(&self, key: &str, if_none_match: Option<&str>) -> Result<Fetched, BucketError> {
        both!(self, b => b.get(key, if_none_match).await)
    }

    // Forwarded, not left to the trait's default (which knows no dates): the pusher judges
    // a lease's age by the store's clock through this.
    async fn get_timed(&self, key: &str) -> Result<Option<Timed>, BucketError> {
        both!(self, b => b.get_timed(key).await)
    }

    async fn get_bounded(
        &self,
        key: &str,
        if_none_match: Option<&str>,
        limit: u64,
    ) -> Result<Fetched, BucketError> {
        both!(self, b => b.get_bounded(key, if_none_match, limit).await)
    }

    async fn get_reader(&self, key: &str) -> Result<Option<ObjectReader>, BucketError> {
        both!(self, b => b.get_reader(key).await)
    }

    async fn exists(&self, key: &str) -> Result<bool, BucketError> {
        both!(self, b => b.exists(key).await)
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BucketError> {
        both!(self, b => b.put(key, bytes).await)
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        condition: PutCondition,
    ) -> Result<PutOutcome, BucketError> {
        both!(self, b => b.put_if(key, bytes, condition).await)
    }

    async fn conditional_writes(&self) -> Result<bool, BucketError> {
        both!(self, b => b.conditional_writes().await)
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<(), BucketError> {
        both!(self, b => b.put_file(key, file).await)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BucketError> {
        both!(self, b => b.list(prefix).await)
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), BucketError> {
        both!(self, b => b.copy(from, to).await)
    }

    async fn delete(&self, key: &str) -> Result<(), BucketError> {
        both!(self, b => b.delete(key).await)
    }

    fn requests(&self) -> u64 {
        both!(self, b => b.requests())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bucket_opened_from_a_url_tells_an_objects_age() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = AnyBucket::open(&BucketUrl::Dir(dir.path().to_owned())).await;
        bucket.put("lease", b"held".to_vec()).await.unwrap();
        let timed = bucket.get_timed("lease").await.unwrap().unwrap();
        assert_eq!(timed.bytes, b"held");
        assert!(
            timed.age.is_some(),
            "the age by the store's clock is lost on the way through AnyBucket"
        );
    }
}
