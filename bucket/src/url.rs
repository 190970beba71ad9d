//! The bucket URL: `s3://BUCKET?endpoint=…&region=…&profile=…` or `file:///DIR` (the same
//! syntax `ferry-agent` accepts in `agent.toml`).

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// A parsed bucket location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketUrl {
    /// An S3 bucket (AWS, Spaces, Garage, MinIO).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Endpoint URL (`endpoint=`); none means AWS's own.
        endpoint: Option<String>,
        /// Signing region (`region=`); none means the SDK's default chain.
        region: Option<String>,
        /// Credentials profile (`profile=`).
        profile: Option<String>,
    },
    /// A local directory laid out like the bucket.
    Dir(PathBuf),
}

/// Why a bucket URL was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BucketUrlError {
    /// Neither `s3://` nor `file://`.
    #[error("{0:?} is neither s3://BUCKET?… nor file:///DIR")]
    Scheme(String),
    /// `s3://` without a bucket name.
    #[error("{0:?} has no bucket name after s3://")]
    NoBucket(String),
    /// A query parameter that is not known.
    #[error("unknown bucket URL parameter {0:?} (known: endpoint, region, profile)")]
    Param(String),
    /// `file://` with a relative path.
    #[error("file:// needs an absolute directory, e.g. file:///srv/ferry-bucket; got {0:?}")]
    Relative(String),
}

impl BucketUrl {
    /// Parses a bucket URL.
    pub fn parse(url: &str) -> Result<Self, BucketUrlError> {
        if let Some(dir) = url.strip_prefix("file://") {
            if !dir.starts_with('/') {
                return Err(BucketUrlError::Relative(url.to_owned()));
            }
            return Ok(Self::Dir(PathBuf::from(dir)));
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(BucketUrlError::Scheme(url.to_owned()));
        };
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() {
            return Err(BucketUrlError::NoBucket(url.to_owned()));
        }
        let (mut endpoint, mut region, mut profile) = (None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match k {
                "endpoint" => &mut endpoint,
                "region" => &mut region,
                "profile" => &mut profile,
                other => return Err(BucketUrlError::Param(other.to_owned())),
            };
            *slot = Some(v.to_owned());
        }
        Ok(Self::S3 {
            bucket: bucket.to_owned(),
            endpoint,
            region,
            profile,
        })
    }
}

impl fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "file://{}", dir.display()),
            Self::S3 {
                bucket,
                endpoint,
                region,
                profile,
            } => {
                write!(f, "s3://{bucket}")?;
                let params: Vec<String> = [
                    ("endpoint", endpoint),
                    ("region", region),
                    ("profile", profile),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                .collect();
                if !params.is_empty() {
                    write!(f, "?{}", params.join("&"))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_with_all_params_round_trips() {
        let text = "s3://ferry?endpoint=http://127.0.0.1:3900&region=garage&profile=p";
        let u = BucketUrl::parse(text).unwrap();
        assert_eq!(
            u,
            BucketUrl::S3 {
                bucket: "ferry".into(),
                endpoint: Some("http://127.0.0.1:3900".into()),
                region: Some("garage".into()),
                profile: Some("p".into()),
            }
        );
        assert_eq!(u.to_string(), text);
    }

    #[test]
    fn file_and_errors() {
        assert_eq!(
            BucketUrl::parse("file:///srv/b").unwrap(),
            BucketUrl::Dir(PathBuf::from("/srv/b"))
        );
        assert!(matches!(
            BucketUrl::parse("file://srv"),
            Err(BucketUrlError::Relative(_))
        ));
        assert!(matches!(
            BucketUrl::parse("s3://"),
            Err(BucketUrlError::NoBucket(_))
        ));
        assert!(matches!(
            BucketUrl::parse("s3://b?x=1"),
            Err(BucketUrlError::Param(_))
        ));
        assert!(matches!(
            BucketUrl::parse("gs://b"),
            Err(BucketUrlError::Scheme(_))
        ));
    }
}
