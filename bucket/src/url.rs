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

    /// The original design's bucket, in Nix's own S3 store URL form.
    const DESIGN: &str = "s3://omni-nix-cache?profile=digitalocean&scheme=https&endpoint=nyc3.digitaloceanspaces.com";

    fn understood(url: &str) -> String {
        match BucketUrl::parse(url) {
            Ok(u) => u.to_string(),
            Err(e) => format!("refused: {e}"),
        }
    }

    #[test]
    fn the_designs_nix_form_url_is_understood_as_nix_does() {
        assert_eq!(
            understood(DESIGN),
            "s3://omni-nix-cache?endpoint=https://nyc3.digitaloceanspaces.com&region=us-east-1&profile=digitalocean"
        );
    }

    #[test]
    fn endpoint_host_takes_the_scheme_parameter_default_https() {
        assert_eq!(
            understood("s3://b?endpoint=minio.local:9000"),
            "s3://b?endpoint=https://minio.local:9000&region=us-east-1"
        );
        assert_eq!(
            understood("s3://b?endpoint=10.0.0.1:3900&scheme=http&region=garage"),
            "s3://b?endpoint=http://10.0.0.1:3900&region=garage"
        );
        // Nix's AWS SDK reads the scheme case-insensitively.
        assert_eq!(
            understood("s3://b?scheme=HTTP&endpoint=h"),
            "s3://b?endpoint=http://h&region=us-east-1"
        );
    }

    #[test]
    fn endpoint_url_keeps_its_own_scheme_and_path() {
        assert_eq!(
            understood("s3://ferry?endpoint=http://127.0.0.1:3900&region=garage&profile=p"),
            "s3://ferry?endpoint=http://127.0.0.1:3900&region=garage&profile=p"
        );
        assert_eq!(
            understood("s3://b?endpoint=https://s3.example.com/store/&scheme=https"),
            "s3://b?endpoint=https://s3.example.com/store&region=us-east-1"
        );
    }

    #[test]
    fn scheme_without_endpoint_means_aws_over_that_scheme() {
        assert_eq!(understood("s3://b"), "s3://b?region=us-east-1");
        assert_eq!(
            understood("s3://b?region=eu-west-1&scheme=https"),
            "s3://b?region=eu-west-1"
        );
        assert_eq!(
            understood("s3://b?region=eu-west-1&scheme=http"),
            "s3://b?endpoint=http://s3.eu-west-1.amazonaws.com&region=eu-west-1"
        );
    }

    #[test]
    fn percent_encoded_values_are_decoded_like_nix_does() {
        assert_eq!(
            understood("s3://b?endpoint=https%3A%2F%2Fs3.example.com&profile=my%20team"),
            "s3://b?endpoint=https://s3.example.com&region=us-east-1&profile=my%20team"
        );
        let text = "s3://b?endpoint=https://e.example&region=r&profile=a%26b%3Dc";
        let url = BucketUrl::parse(text).unwrap();
        assert_eq!(url.to_string(), text);
        assert_eq!(BucketUrl::parse(&url.to_string()).unwrap(), url);
    }

    #[test]
    fn what_ferry_prints_parses_back_to_the_same_bucket() {
        for text in [
            DESIGN,
            "s3://b?endpoint=10.0.0.1:3900&scheme=http&region=garage",
            "s3://b?region=eu-west-1&scheme=http",
            "s3://b",
            "file:///srv/b",
        ] {
            let url = BucketUrl::parse(text).unwrap();
            assert_eq!(BucketUrl::parse(&url.to_string()).unwrap(), url, "{text}");
        }
    }

    #[test]
    fn refusals_name_the_parameter_and_what_to_write() {
        for (text, expect) in [
            ("s3://b?x=1", "unknown bucket URL parameter \"x\""),
            ("s3://b?x=1", "endpoint, scheme, region, profile"),
            ("s3://b?compression=zstd", "\"compression\""),
            ("s3://b?scheme=ftp&endpoint=h", "scheme \"ftp\""),
            (
                "s3://b?scheme=http&endpoint=https://h",
                "scheme=http but endpoint=https://h",
            ),
            ("s3://b?endpoint=ftp://h", "endpoint \"ftp://h\""),
            ("s3://b?endpoint=h/path", "endpoint \"h/path\""),
            ("s3://b?endpoint=https://", "endpoint \"https://\""),
            ("s3://b?region=a&region=b", "region is given twice"),
            ("s3://b?region=", "region is empty"),
            ("s3://b?profile=%zz", "\"%zz\""),
            ("s3://b/folder", "\"b/folder\""),
            ("s3://", "no bucket name"),
            ("s3://?region=r", "no bucket name"),
            ("file://srv", "absolute directory"),
            ("gs://b", "neither"),
        ] {
            let got = understood(text);
            assert!(
                got.starts_with("refused: ") && got.contains(expect),
                "{text}: expected a refusal containing {expect:?}, got {got:?}"
            );
        }
        assert_eq!(
            BucketUrl::parse("file:///srv/b").unwrap(),
            BucketUrl::Dir(PathBuf::from("/srv/b"))
        );
        assert_eq!(understood("s3://b/"), "s3://b?region=us-east-1");
    }
}
