//! The bucket named in `agent.toml`, whichever kind it is (static dispatch over the two
//! real implementations).

use std::time::Duration;

use super::bucket::{Bucket, BucketError, Fetched};
use super::bucket_dir::DirBucket;
use super::bucket_s3::{S3Bucket, S3Settings};
use crate::bucket_url::BucketUrl;
use crate::config::Config;

/// An S3 or directory bucket.
#[derive(Debug)]
pub enum ConfiguredBucket {
    /// `s3://…`
    S3(S3Bucket),
    /// `file://…`
    Dir(DirBucket),
}

impl ConfiguredBucket {
    /// Open the bucket `url` with the configuration's credentials and timeouts.
    pub async fn open(url: &BucketUrl, config: &Config) -> Self {
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
                    region: region.clone(),
                    profile: config
                        .credentials
                        .profile
                        .clone()
                        .or_else(|| profile.clone()),
                    credentials_file: config.credentials.file.clone(),
                    timeout: Duration::from_secs(config.timeouts.fetch_sec),
                })
                .await,
            ),
        }
    }
}

impl Bucket for ConfiguredBucket {
    async fn get(&self, key: &str, if_none_match: Option<&str>) -> Result<Fetched, BucketError> {
        match self {
            Self::S3(b) => b.get(key, if_none_match).await,
            Self::Dir(b) => b.get(key, if_none_match).await,
        }
    }

    fn direct_cache_url(&self) -> Option<String> {
        match self {
            Self::S3(b) => b.direct_cache_url(),
            Self::Dir(b) => b.direct_cache_url(),
        }
    }

    fn requests(&self) -> u64 {
        match self {
            Self::S3(b) => b.requests(),
            Self::Dir(b) => b.requests(),
        }
    }
}
