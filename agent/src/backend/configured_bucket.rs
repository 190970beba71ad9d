//! The bucket named in `agent.toml`: a `ferry-bucket` store opened with the agent's
//! credentials (`credentials.profile` / `credentials.file`) and fetch timeout, plus the
//! direct cache URL a `file://` bucket gives `nix copy`. A configured credentials file that
//! is missing or empty (at boot, `/run/keys` is empty until the keys are deployed again)
//! makes every read fail at once with that reason, so the tick restores from state and says
//! why instead of retrying a request that cannot be signed.

use std::time::Duration;

use ferry_bucket::{AnyBucket, BucketUrl, DirBucket, S3Bucket, S3Settings};

use super::bucket::{BucketError, Fetched, ObjectReader, ReadBucket};
use crate::config::{Config, Credentials};

/// The configured bucket (S3 or a directory), read-only.
#[derive(Debug)]
pub struct ConfiguredBucket {
    store: AnyBucket,
    direct_cache_url: Option<String>,
    /// Why the configured credentials cannot be used, when they cannot.
    no_credentials: Option<String>,
}

impl ConfiguredBucket {
    /// Opens the bucket `url` with the configuration's credentials and timeouts. Makes no
    /// request.
    pub async fn open(url: &BucketUrl, config: &Config) -> Self {
        let store = match url {
            BucketUrl::Dir(dir) => AnyBucket::Dir(DirBucket::new(dir.clone())),
            BucketUrl::S3 { .. } => {
                // Always `Some` for an `s3://` URL.
                let settings = s3_settings(url, config).unwrap_or_default();
                AnyBucket::S3(S3Bucket::new(&settings).await)
            }
        };
        let no_credentials =
            match url {
                BucketUrl::S3 { .. } => config.credentials.file.as_deref().and_then(|f| {
                    credentials_file_problem("credentials.file", f, std::fs::read(f))
                }),
                BucketUrl::Dir(_) => None,
            };
        Self {
            store,
            direct_cache_url: direct_cache_url(url),
            no_credentials,
        }
    }

    fn usable(&self) -> Result<(), BucketError> {
        match &self.no_credentials {
            Some(why) => Err(BucketError::Credentials(why.clone())),
            None => Ok(()),
        }
    }
}

/// What is wrong with the credentials file `file` (agent.toml's `key`), given what reading
/// it gave; `None` when it has content (whether the content is right is the store's to
/// say). A file of nothing but blank and comment lines counts as empty: it is what the NixOS
/// module hands the agent when the file `LoadCredential=` names is missing. Pure.
pub fn credentials_file_problem(
    key: &str,
    file: &std::path::Path,
    read: std::io::Result<Vec<u8>>,
) -> Option<String> {
    let hint = format!(
        "{key} in agent.toml; a file systemd's LoadCredential= reads (e.g. under /run/keys) \
         is missing after a reboot until the keys are deployed again"
    );
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "the credentials file {} is missing ({hint})",
            file.display()
        )),
        Ok(bytes)
            if String::from_utf8_lossy(&bytes).lines().all(|l| {
                let l = l.trim();
                l.is_empty() || l.starts_with('#') || l.starts_with(';')
            }) =>
        {
            Some(format!(
                "the credentials file {} is empty ({hint})",
                file.display()
            ))
        }
        _ => None,
    }
}

/// The S3 client settings for `url`: the configured profile wins over the URL's `profile=`,
/// and the whole fetch (retries included) is bounded by `timeouts.fetchSec`. `None` for a
/// `file://` URL.
pub fn s3_settings(url: &BucketUrl, config: &Config) -> Option<S3Settings> {
    s3_settings_with(
        url,
        &config.credentials,
        Duration::from_secs(config.timeouts.fetch_sec),
    )
}

/// The S3 client settings for `url` with `credentials` (whose profile wins over the URL's)
/// and `timeout` over each whole operation. `None` for a `file://` URL.
pub fn s3_settings_with(
    url: &BucketUrl,
    credentials: &Credentials,
    timeout: Duration,
) -> Option<S3Settings> {
    let BucketUrl::S3 {
        bucket,
        endpoint,
        region,
        profile,
    } = url
    else {
        return None;
    };
    Some(S3Settings {
        bucket: bucket.clone(),
        endpoint: endpoint.clone(),
        region: Some(region.clone()),
        profile: credentials.profile.clone().or_else(|| profile.clone()),
        credentials_file: credentials.file.clone(),
        timeout,
    })
}

/// The binary cache `nix copy` can read without the proxy: a `file://` bucket is one.
pub fn direct_cache_url(url: &BucketUrl) -> Option<String> {
    match url {
        BucketUrl::Dir(_) => Some(url.to_string()),
        BucketUrl::S3 { .. } => None,
    }
}

impl ReadBucket for ConfiguredBucket {
    async fn get(&self, key: &str, if_none_match: Option<&str>) -> Result<Fetched, BucketError> {
        self.usable()?;
        ferry_bucket::Bucket::get(&self.store, key, if_none_match).await
    }

    async fn get_bounded(
        &self,
        key: &str,
        if_none_match: Option<&str>,
        limit: u64,
    ) -> Result<Fetched, BucketError> {
        self.usable()?;
        ferry_bucket::Bucket::get_bounded(&self.store, key, if_none_match, limit).await
    }

    async fn get_reader(&self, key: &str) -> Result<Option<ObjectReader>, BucketError> {
        self.usable()?;
        ferry_bucket::Bucket::get_reader(&self.store, key).await
    }

    fn direct_cache_url(&self) -> Option<String> {
        self.direct_cache_url.clone()
    }

    fn requests(&self) -> u64 {
        ferry_bucket::Bucket::requests(&self.store)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    #[test]
    fn direct_cache_url_only_for_directories() {
        let dir = BucketUrl::parse("file:///srv/bucket").unwrap();
        assert_eq!(
            direct_cache_url(&dir).as_deref(),
            Some("file:///srv/bucket")
        );
        let s3 = BucketUrl::parse("s3://ferry?endpoint=http://127.0.0.1:3900").unwrap();
        assert_eq!(direct_cache_url(&s3), None);
        let config = Config::parse("", Path::new("t")).unwrap();
        assert!(s3_settings(&dir, &config).is_none());
    }

    #[test]
    fn missing_or_empty_credentials_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aws");
        let missing =
            credentials_file_problem("credentials.file", &file, std::fs::read(&file)).unwrap();
        assert!(
            missing.contains("is missing") && missing.contains("/aws"),
            "{missing}"
        );
        for empty in ["", "\n", "# no credentials: the file was missing\n"] {
            let problem =
                credentials_file_problem("credentials.file", &file, Ok(empty.into())).unwrap();
            assert!(problem.contains("is empty"), "{problem}");
        }
        let good = b"[default]\naws_access_key_id = GK1\n".to_vec();
        assert_eq!(
            credentials_file_problem("credentials.file", &file, Ok(good)),
            None
        );
    }

    #[tokio::test]
    async fn no_request_without_the_credentials_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = BucketUrl::parse("s3://ferry?endpoint=http://127.0.0.1:9&region=garage").unwrap();
        let mut config = Config::parse("", Path::new("t")).unwrap();
        config.credentials.file = Some(dir.path().join("absent"));
        let bucket = ConfiguredBucket::open(&url, &config).await;
        let err = bucket
            .get_bounded("manifest.json", None, 10)
            .await
            .unwrap_err();
        assert!(matches!(err, BucketError::Credentials(_)), "{err}");
        assert!(err.to_string().contains("is missing"), "{err}");
        assert_eq!(bucket.requests(), 0);
    }

    #[test]
    fn configured_credentials_win_over_the_url_profile() {
        let url =
            BucketUrl::parse("s3://ferry?endpoint=http://e&region=garage&profile=url").unwrap();
        let mut config = Config::parse("", Path::new("t")).unwrap();
        let s = s3_settings(&url, &config).unwrap();
        assert_eq!(s.bucket, "ferry");
        assert_eq!(s.endpoint.as_deref(), Some("http://e"));
        assert_eq!(s.region.as_deref(), Some("garage"));
        assert_eq!(s.profile.as_deref(), Some("url"));
        assert_eq!(s.credentials_file, None);
        assert_eq!(s.timeout, Duration::from_secs(config.timeouts.fetch_sec));
        config.credentials.profile = Some("ops".into());
        config.credentials.file = Some(PathBuf::from("/etc/ferry/creds"));
        let s = s3_settings(&url, &config).unwrap();
        assert_eq!(s.profile.as_deref(), Some("ops"));
        assert_eq!(
            s.credentials_file.as_deref(),
            Some(Path::new("/etc/ferry/creds"))
        );
    }
}
