//! The S3 bucket (AWS, DigitalOcean Spaces, Garage, MinIO) through aws-sdk-s3: path-style,
//! checksums only when required (non-AWS stores reject the SDK's default CRCs), the SDK's
//! standard retries (exponential backoff with jitter) and a conditional GET whose 304 is read
//! from the raw status.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
// aws-config's `profile_files` takes these (deprecated) aliases; the new names live in a
// crate aws-config does not re-export.
use aws_config::profile::ProfileFileCredentialsProvider;
#[allow(deprecated)]
use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::SdkError;

use super::bucket::{Bucket, BucketError, Fetched};

/// Settings for the S3 client.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint URL; none for AWS.
    pub endpoint: Option<String>,
    /// Signing region.
    pub region: Option<String>,
    /// Credentials profile.
    pub profile: Option<String>,
    /// Shared-credentials file.
    pub credentials_file: Option<std::path::PathBuf>,
    /// Whole-operation timeout, retries included.
    pub timeout: Duration,
}

/// An S3 bucket.
#[derive(Debug)]
pub struct S3Bucket {
    client: Client,
    bucket: String,
    requests: AtomicU64,
}

impl S3Bucket {
    /// Build the client (reads credentials configuration, makes no request).
    pub async fn new(s: &S3Settings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(4)
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_timeout(s.timeout)
                    .build(),
            );
        // Configured credentials win over the environment: the operator named them.
        if s.profile.is_some() || s.credentials_file.is_some() {
            let mut provider = ProfileFileCredentialsProvider::builder();
            if let Some(p) = &s.profile {
                loader = loader.profile_name(p);
                provider = provider.profile_name(p);
            }
            if let Some(f) = &s.credentials_file {
                loader = loader.profile_files(credentials_files(f));
                provider = provider.profile_files(credentials_files(f));
            }
            loader = loader.credentials_provider(provider.build());
        }
        if let Some(r) = &s.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(e) = &s.endpoint {
            loader = loader.endpoint_url(e);
        }
        let shared = loader.load().await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self {
            client: Client::from_conf(config),
            bucket: s.bucket.clone(),
            requests: AtomicU64::new(0),
        }
    }
}

#[allow(deprecated)]
fn credentials_files(file: &Path) -> ProfileFiles {
    ProfileFiles::builder()
        .with_file(ProfileFileKind::Credentials, file)
        .include_default_config_file(true)
        .build()
}

impl Bucket for S3Bucket {
    async fn get(&self, key: &str, if_none_match: Option<&str>) -> Result<Fetched, BucketError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(etag) = if_none_match {
            req = req.if_none_match(etag);
        }
        match req.send().await {
            Ok(out) => {
                let etag = out.e_tag().map(str::to_owned);
                let body = out.body.collect().await.map_err(|e| {
                    BucketError::Unreachable(format!("reading s3://{}/{key}: {e}", self.bucket))
                })?;
                Ok(Fetched::Object {
                    bytes: body.into_bytes().to_vec(),
                    etag,
                })
            }
            Err(err) => {
                // A 304 and a 404 arrive as service errors; the raw status is the reliable part.
                let status = err.raw_response().map(|r| r.status().as_u16());
                match (status, &err) {
                    (Some(304), _) => Ok(Fetched::NotModified),
                    (Some(404), _) => Ok(Fetched::Missing),
                    (Some(s), SdkError::ServiceError(_)) if s < 500 => {
                        Err(BucketError::Refused(format!(
                            "s3://{}/{key}: HTTP {s}: {}",
                            self.bucket,
                            error_chain(&err)
                        )))
                    }
                    _ => Err(BucketError::Unreachable(format!(
                        "s3://{}/{key}: {}",
                        self.bucket,
                        error_chain(&err)
                    ))),
                }
            }
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// The SDK's top-level Display is terse ("dispatch failure"); the sources say why.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
