//! The status store (`[status]` in agent.toml): the bucket the agent writes its host status
//! report to, `hosts/<host>.json`, read by `ferry status` and `ferry push --wait`. A bucket
//! of its own with credentials of its own: on Spaces and Garage a key reaches whole buckets,
//! so the host's write access stays away from the deploy bucket. Writing is one PUT through
//! `ferry-bucket` (S3 or a directory), bounded in time so a status store that hangs cannot
//! hold a tick. The wave gate reads the reports of the hosts of earlier waves back with
//! conditional GETs (ETag), each bounded in time and size the same way.

use std::future::Future;
use std::time::Duration;

use ferry_bucket::{AnyBucket, Bucket as _, BucketError, BucketUrl, DirBucket, Fetched, S3Bucket};
use ferry_schema::host_status::MAX_REPORT_BYTES;

use super::configured_bucket::{credentials_file_problem, s3_settings_with};
use crate::config::Status;

/// Where host status reports are written.
pub trait StatusStore: Send + Sync {
    /// Replaces the object at `key` with `bytes`.
    fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<(), BucketError>> + Send;

    /// GET the report at `key` (at most [`MAX_REPORT_BYTES`]); with `if_none_match`, a
    /// matching ETag gives [`Fetched::Unchanged`].
    fn get(
        &self,
        key: &str,
        if_none_match: Option<&str>,
    ) -> impl Future<Output = Result<Fetched, BucketError>> + Send;

    /// Requests made so far.
    fn requests(&self) -> u64;
}

/// The configured status store.
#[derive(Debug)]
pub struct StatusBucket {
    store: AnyBucket,
    /// Why the configured credentials cannot be used, when they cannot.
    no_credentials: Option<String>,
    /// One write's whole time, retries included.
    timeout: Duration,
}

impl StatusBucket {
    /// Opens the status store `url` with `[status]`'s credentials; each write may take
    /// `timeout` in all. Makes no request.
    pub async fn open(url: &BucketUrl, status: &Status, timeout: Duration) -> Self {
        let store = match url {
            BucketUrl::Dir(dir) => AnyBucket::Dir(DirBucket::new(dir.clone())),
            BucketUrl::S3 { .. } => {
                // Always `Some` for an `s3://` URL.
                let settings =
                    s3_settings_with(url, &status.credentials, timeout).unwrap_or_default();
                AnyBucket::S3(S3Bucket::new(&settings).await)
            }
        };
        let no_credentials = match url {
            BucketUrl::S3 { .. } => status.credentials.file.as_deref().and_then(|f| {
                credentials_file_problem("status.credentials.file", f, std::fs::read(f))
            }),
            BucketUrl::Dir(_) => None,
        };
        Self {
            store,
            no_credentials,
            timeout,
        }
    }
}

impl StatusStore for StatusBucket {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BucketError> {
        if let Some(why) = &self.no_credentials {
            return Err(BucketError::Credentials(why.clone()));
        }
        match tokio::time::timeout(self.timeout, self.store.put(key, bytes)).await {
            Ok(done) => done,
            Err(_) => Err(BucketError::Unreachable(format!(
                "no answer to the write of {key} within {} s",
                self.timeout.as_secs()
            ))),
        }
    }

    async fn get(&self, key: &str, if_none_match: Option<&str>) -> Result<Fetched, BucketError> {
        if let Some(why) = &self.no_credentials {
            return Err(BucketError::Credentials(why.clone()));
        }
        let read = self.store.get_bounded(key, if_none_match, MAX_REPORT_BYTES);
        match tokio::time::timeout(self.timeout, read).await {
            Ok(done) => done,
            Err(_) => Err(BucketError::Unreachable(format!(
                "no answer to the read of {key} within {} s",
                self.timeout.as_secs()
            ))),
        }
    }

    fn requests(&self) -> u64 {
        self.store.requests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_store_gets_the_report_and_counts_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let url = BucketUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
        let store = StatusBucket::open(&url, &Status::default(), Duration::from_secs(5)).await;
        store.put("hosts/web-1.json", b"{}".to_vec()).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("hosts/web-1.json")).unwrap(),
            b"{}"
        );
        assert_eq!(store.requests(), 1);
        // Read back: found with an ETag, then unchanged under it, then missing elsewhere.
        let Fetched::Found { bytes, etag } = store.get("hosts/web-1.json", None).await.unwrap()
        else {
            panic!("the report is there")
        };
        assert_eq!(bytes, b"{}");
        assert_eq!(
            store
                .get("hosts/web-1.json", etag.as_deref())
                .await
                .unwrap(),
            Fetched::Unchanged
        );
        assert_eq!(
            store.get("hosts/db-1.json", None).await.unwrap(),
            Fetched::Missing
        );
        assert_eq!(store.requests(), 4);
    }

    #[tokio::test]
    async fn no_request_without_the_credentials_file_and_the_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let url =
            BucketUrl::parse("s3://status?endpoint=http://127.0.0.1:9&region=garage").unwrap();
        let mut status = Status::default();
        status.credentials.file = Some(dir.path().join("absent"));
        let store = StatusBucket::open(&url, &status, Duration::from_secs(5)).await;
        let err = store.put("hosts/a.json", vec![]).await.unwrap_err();
        assert!(err.to_string().contains("status.credentials.file"), "{err}");
        assert_eq!(store.requests(), 0);
    }

    /// A status store that takes the connection and never answers (down behind a proxy, or
    /// trickling on purpose) costs a tick at most the write's bound, then is a line.
    #[tokio::test]
    async fn a_silent_status_store_cannot_hold_the_tick() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and holds every connection, reading nothing and answering nothing.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("status-credentials");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = GK1\naws_secret_access_key = s\n",
        )
        .unwrap();
        let url = BucketUrl::parse(&format!(
            "s3://status?endpoint=http://127.0.0.1:{port}&region=garage"
        ))
        .unwrap();
        let mut status = Status::default();
        status.credentials.file = Some(creds);
        let bound = Duration::from_secs(2);
        let store = StatusBucket::open(&url, &status, bound).await;
        let started = std::time::Instant::now();
        let err = store.put("hosts/a.json", b"{}".to_vec()).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, BucketError::Unreachable(_)), "{err}");
        assert!(err.to_string().contains("hosts/a.json"), "{err}");
        assert!(took >= bound, "gave up before its bound: {took:?}");
        assert!(
            took < bound + Duration::from_secs(2),
            "held the tick {took:?}"
        );
        silent.abort();
    }
}
