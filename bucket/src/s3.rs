//! The S3 bucket (AWS, DigitalOcean Spaces, Garage, MinIO) through aws-sdk-s3: path-style,
//! checksums only when required (non-AWS stores reject the SDK's default CRCs), the SDK's
//! standard retries, a conditional GET whose 304 is read from the raw status, conditional
//! PUTs with a one-time probe of whether the store honours them, and multipart uploads for
//! large files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::BehaviorVersion;
// aws-config's `profile_files` takes these (deprecated) aliases; the new names live in a
// crate aws-config does not re-export.
use aws_config::profile::ProfileFileCredentialsProvider;
#[allow(deprecated)]
use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{
    ConfigBag, Intercept, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    RuntimeComponents,
};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::sync::OnceCell;

use crate::bucket::{
    Bucket, BucketError, Fetched, ObjectInfo, ObjectReader, PutCondition, PutOutcome, Timed,
};

/// Files larger than this go up in parts.
const MULTIPART_THRESHOLD: u64 = 32 * 1024 * 1024;
/// Part size of a multipart upload (S3's minimum is 5 MiB).
const PART_SIZE: u64 = 16 * 1024 * 1024;
/// Folder of the scratch objects the conditional-write probe writes and deletes.
const PROBE_PREFIX: &str = "ferry-probe/";
/// An ETag no object has: the probe's `If-Match` must fail on a store that checks it.
const NEVER_MATCHES: &str = "\"ferry-probe-never-matches\"";

/// Settings for the S3 client.
#[derive(Debug, Clone)]
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
    pub credentials_file: Option<PathBuf>,
    /// Whole-operation timeout, retries included.
    pub timeout: Duration,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            endpoint: None,
            region: None,
            profile: None,
            credentials_file: None,
            timeout: Duration::from_secs(300),
        }
    }
}

/// An S3 bucket.
#[derive(Debug)]
pub struct S3Bucket {
    client: Client,
    bucket: String,
    requests: AtomicU64,
    conditional: OnceCell<bool>,
}

impl S3Bucket {
    /// Builds the client (reads credentials configuration, makes no request).
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
        // Configured credentials win over the environment: the user named them.
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
        Self::from_client(Client::from_conf(config), &s.bucket)
    }

    /// The configured client. Tests rebuild it with an interceptor added
    /// (`client().config().to_builder()`) to see what Ferry's settings put on the wire.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Wraps an already configured client (tests, callers with their own configuration).
    pub fn from_client(client: Client, bucket: &str) -> Self {
        Self {
            client,
            bucket: bucket.to_owned(),
            requests: AtomicU64::new(0),
            conditional: OnceCell::new(),
        }
    }

    /// Writes a scratch object, then tries to overwrite it with `If-None-Match: *` and with
    /// an `If-Match` that cannot match: a store that honours conditions refuses both. Any
    /// answer but a refusal (a success, 501, an odd error) counts as "not honoured", which
    /// only makes callers use their slower fallback.
    async fn probe_conditional_writes(&self) -> Result<bool, BucketError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = format!("{PROBE_PREFIX}{}-{nanos:x}", std::process::id());
        self.put(&key, b"probe".to_vec()).await?;
        let mut supported = true;
        for condition in [
            PutCondition::IfAbsent,
            PutCondition::IfMatch(NEVER_MATCHES.to_owned()),
        ] {
            match self.put_if(&key, b"probe".to_vec(), condition).await {
                Ok(PutOutcome::PreconditionFailed) => {}
                Ok(PutOutcome::Written) | Err(_) => {
                    supported = false;
                    break;
                }
            }
        }
        self.delete(&key).await?;
        Ok(supported)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Maps an SDK error: 4xx answers are refusals, the rest means unreachable.
    fn fail<E>(&self, key: &str, err: &SdkError<E, HttpResponse>) -> BucketError
    where
        E: std::error::Error + 'static,
    {
        let chain = error_chain(err);
        match (status_of(err), err) {
            (Some(s), SdkError::ServiceError(_)) if s < 500 => {
                BucketError::Refused(format!("s3://{}/{key}: HTTP {s}: {chain}", self.bucket))
            }
            _ => BucketError::Unreachable(format!("s3://{}/{key}: {chain}", self.bucket)),
        }
    }

    async fn put_multipart(&self, key: &str, file: &Path, size: u64) -> Result<(), BucketError> {
        self.count();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.fail(key, &e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                BucketError::Refused(format!("s3://{}/{key}: no upload id", self.bucket))
            })?
            .to_owned();
        let result = self.upload_parts(key, file, size, &upload_id).await;
        if result.is_err() {
            self.count();
            // Best effort: an abandoned upload only costs storage until the store expires it.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        file: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<(), BucketError> {
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let length = PART_SIZE.min(size - offset);
            let body = ByteStream::read_from()
                .path(file)
                .offset(offset)
                .length(Length::Exact(length))
                .build()
                .await
                .map_err(|e| local_error(file, std::io::Error::other(e)))?;
            self.count();
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(body)
                .send()
                .await
                .map_err(|e| self.fail(key, &e))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .part_number(number)
                    .build(),
            );
            offset += length;
            number += 1;
        }
        self.count();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.fail(key, &e))?;
        Ok(())
    }
}

fn local_error(path: &Path, source: std::io::Error) -> BucketError {
    BucketError::LocalFile {
        path: path.display().to_string(),
        source,
    }
}

fn status_of<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
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
        self.count();
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
                Ok(Fetched::Found {
                    bytes: body.into_bytes().to_vec(),
                    etag,
                })
            }
            // A 304 and a 404 arrive as service errors; the raw status is the reliable part.
            Err(err) => match status_of(&err) {
                Some(304) => Ok(Fetched::Unchanged),
                Some(404) => Ok(Fetched::Missing),
                _ => Err(self.fail(key, &err)),
            },
        }
    }

    async fn get_timed(&self, key: &str) -> Result<Option<Timed>, BucketError> {
        self.count();
        let date = DateHeader::default();
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .customize()
            .interceptor(date.clone())
            .send()
            .await;
        match answer {
            Ok(out) => {
                let etag = out.e_tag().map(str::to_owned);
                let modified = out
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok());
                let body = out.body.collect().await.map_err(|e| {
                    BucketError::Unreachable(format!("reading s3://{}/{key}: {e}", self.bucket))
                })?;
                let age = match (date.get(), modified) {
                    (Some(now), Some(m)) => Some(now.duration_since(m).unwrap_or_default()),
                    _ => None,
                };
                Ok(Some(Timed {
                    bytes: body.into_bytes().to_vec(),
                    etag,
                    age,
                }))
            }
            Err(err) if status_of(&err) == Some(404) => Ok(None),
            Err(err) => Err(self.fail(key, &err)),
        }
    }

    async fn get_bounded(
        &self,
        key: &str,
        if_none_match: Option<&str>,
        limit: u64,
    ) -> Result<Fetched, BucketError> {
        self.count();
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(etag) = if_none_match {
            req = req.if_none_match(etag);
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(err) => {
                return match status_of(&err) {
                    Some(304) => Ok(Fetched::Unchanged),
                    Some(404) => Ok(Fetched::Missing),
                    _ => Err(self.fail(key, &err)),
                };
            }
        };
        let too_large = |size| BucketError::TooLarge {
            key: key.to_owned(),
            limit,
            size,
        };
        let announced = out.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(n) = announced.filter(|n| *n > limit) {
            return Err(too_large(Some(n)));
        }
        let etag = out.e_tag().map(str::to_owned);
        let capacity = announced.unwrap_or(0).min(limit.saturating_add(1));
        let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        let mut body = out.body;
        while let Some(chunk) = body.try_next().await.map_err(|e| {
            BucketError::Unreachable(format!("reading s3://{}/{key}: {e}", self.bucket))
        })? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                // Dropping the body closes the connection: nothing more is read.
                return Err(too_large(None));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Found { bytes, etag })
    }

    async fn get_reader(&self, key: &str) -> Result<Option<ObjectReader>, BucketError> {
        self.count();
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectReader {
                len: out.content_length().and_then(|n| u64::try_from(n).ok()),
                body: Box::pin(out.body.into_async_read()),
            })),
            Err(err) if status_of(&err) == Some(404) => Ok(None),
            Err(err) => Err(self.fail(key, &err)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, BucketError> {
        self.count();
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if status_of(&err) == Some(404) => Ok(false),
            Err(err) => Err(self.fail(key, &err)),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BucketError> {
        self.count();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.fail(key, &e))?;
        Ok(())
    }

    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        condition: PutCondition,
    ) -> Result<PutOutcome, BucketError> {
        self.count();
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes));
        let req = match condition {
            PutCondition::IfMatch(etag) => req.if_match(etag),
            PutCondition::IfAbsent => req.if_none_match("*"),
        };
        match req.send().await {
            Ok(_) => Ok(PutOutcome::Written),
            // 412: the condition failed; 409: a concurrent conditional write won; 404: an
            // `If-Match` object is gone (AWS). In each case the object is not what we expected.
            Err(err) if matches!(status_of(&err), Some(404 | 409 | 412)) => {
                Ok(PutOutcome::PreconditionFailed)
            }
            Err(err) => Err(self.fail(key, &err)),
        }
    }

    async fn conditional_writes(&self) -> Result<bool, BucketError> {
        self.conditional
            .get_or_try_init(|| self.probe_conditional_writes())
            .await
            .copied()
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<(), BucketError> {
        let size = tokio::fs::metadata(file)
            .await
            .map_err(|e| local_error(file, e))?
            .len();
        if size > MULTIPART_THRESHOLD {
            return self.put_multipart(key, file, size).await;
        }
        let body = ByteStream::from_path(file)
            .await
            .map_err(|e| local_error(file, std::io::Error::other(e)))?;
        self.count();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| self.fail(key, &e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BucketError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.count();
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.fail(prefix, &e))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    out.push(ObjectInfo {
                        key: key.to_owned(),
                        size: object
                            .size()
                            .and_then(|s| u64::try_from(s).ok())
                            .unwrap_or(0),
                        modified: object
                            .last_modified()
                            .and_then(|t| SystemTime::try_from(*t).ok()),
                    });
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), BucketError> {
        self.count();
        match self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(format!("{}/{from}", self.bucket))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => Err(BucketError::NotFound(from.to_owned())),
            Err(err) => Err(self.fail(to, &err)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BucketError> {
        self.count();
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => Ok(()),
            Err(err) => Err(self.fail(key, &err)),
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// The SDK's top-level Display is terse ("dispatch failure"); the sources say why.
/// Records the `Date` header of an answer: the store's clock when it answered, which
/// [`Bucket::get_timed`] sets against the object's `Last-Modified` (the same clock).
#[derive(Debug, Clone, Default)]
struct DateHeader(std::sync::Arc<std::sync::Mutex<Option<SystemTime>>>);

impl DateHeader {
    fn get(&self) -> Option<SystemTime> {
        self.0.lock().ok().and_then(|d| *d)
    }
}

impl Intercept for DateHeader {
    fn name(&self) -> &'static str {
        "ferry-date-header"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| DateTime::from_str(d, DateTimeFormat::HttpDate).ok())
            .and_then(|d| SystemTime::try_from(d).ok());
        if let (Some(date), Ok(mut slot)) = (date, self.0.lock()) {
            *slot = Some(date);
        }
        Ok(())
    }
}

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
