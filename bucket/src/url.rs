//! The bucket URL: `s3://BUCKET?endpoint=…&scheme=…&region=…&profile=…` or `file:///DIR`,
//! read as Nix reads its own S3 store URLs (the same syntax `ferry-agent` accepts in
//! `agent.toml`), so a URL that works with `nix copy --to s3://…` works with Ferry.
//!
//! Nix's rules (its `ParsedS3URL`): `endpoint` is either a full `http(s)://` URL, used as it
//! is, or a bare `host[:port]`, reached over `scheme` (default `https`); without `endpoint`
//! the bucket is on AWS; `region` defaults to `us-east-1`; query values are %-decoded.
//! Ferry is stricter where Nix would silently pick one reading: an unknown parameter, a
//! parameter given twice, an empty value and a `scheme` that contradicts the endpoint's own
//! are refused, naming the parameter.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// The signing region when the URL names none: Nix's default.
pub const DEFAULT_REGION: &str = "us-east-1";

/// A parsed bucket location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketUrl {
    /// An S3 bucket (AWS, Spaces, Garage, MinIO).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Endpoint URL with its scheme (`https://nyc3.digitaloceanspaces.com`); none means
        /// AWS's own endpoint over https.
        endpoint: Option<String>,
        /// Signing region (`region=`, default [`DEFAULT_REGION`]).
        region: String,
        /// Credentials profile (`profile=`); none means the default credential chain.
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
    /// A bucket name with a folder or characters no bucket name has.
    #[error(
        "bucket name {0:?} is not a bucket name: use the bucket's name alone (letters, digits, `.`, `-`, `_`); Ferry uses the bucket's root, not a folder in it"
    )]
    BucketName(String),
    /// A query parameter that is not known.
    #[error(
        "unknown bucket URL parameter {0:?}: Ferry reads endpoint, scheme, region, profile (Nix's settings for the connection); remove it"
    )]
    Param(String),
    /// A parameter given twice.
    #[error("{0} is given twice in the bucket URL; keep one")]
    Duplicate(String),
    /// A parameter with an empty value.
    #[error("{0} is empty in the bucket URL; give a value or leave it out")]
    Empty(String),
    /// A malformed %-escape.
    #[error("{0:?} in the bucket URL has a malformed %-escape; write %XX with two hex digits")]
    Encoding(String),
    /// `scheme=` other than http or https.
    #[error("scheme {0:?} in the bucket URL is neither http nor https")]
    SchemeValue(String),
    /// An endpoint that is neither `host[:port]` nor an `http(s)://` URL.
    #[error(
        "endpoint {0:?} is neither a host[:port] (reached over scheme=, default https) nor an http:// or https:// URL"
    )]
    Endpoint(String),
    /// `scheme=` contradicts the scheme the endpoint URL carries.
    #[error(
        "scheme={scheme} but endpoint={endpoint} names another scheme; drop scheme= or write the endpoint as a bare host"
    )]
    SchemeConflict {
        /// The `scheme=` value.
        scheme: String,
        /// The endpoint as written.
        endpoint: String,
    },
    /// `file://` with a relative path.
    #[error("file:// needs an absolute directory, e.g. file:///srv/ferry-bucket; got {0:?}")]
    Relative(String),
}

/// The parameters as written (decoded), before they are combined.
#[derive(Default)]
struct Params {
    endpoint: Option<String>,
    scheme: Option<String>,
    region: Option<String>,
    profile: Option<String>,
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
        let bucket = bucket.strip_suffix('/').unwrap_or(bucket);
        if bucket.is_empty() {
            return Err(BucketUrlError::NoBucket(url.to_owned()));
        }
        if !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(BucketUrlError::BucketName(bucket.to_owned()));
        }
        let params = parse_query(query)?;
        let scheme = match &params.scheme {
            None => None,
            Some(s) if s.eq_ignore_ascii_case("https") => Some("https"),
            Some(s) if s.eq_ignore_ascii_case("http") => Some("http"),
            Some(s) => return Err(BucketUrlError::SchemeValue(s.clone())),
        };
        let region = params.region.unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let endpoint = match (&params.endpoint, scheme) {
            (Some(written), scheme) => Some(endpoint_url(written, scheme)?),
            // Nix then talks to AWS over the scheme asked for; the SDK's own AWS endpoint is
            // https, so plain http needs the endpoint spelled out.
            (None, Some("http")) => Some(format!("http://s3.{region}.amazonaws.com")),
            (None, _) => None,
        };
        Ok(Self::S3 {
            bucket: bucket.to_owned(),
            endpoint,
            region,
            profile: params.profile,
        })
    }
}

/// Splits and %-decodes the query, refusing unknown, repeated and empty parameters.
fn parse_query(query: &str) -> Result<Params, BucketUrlError> {
    let mut params = Params::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k)?;
        let slot = match key.as_str() {
            "endpoint" => &mut params.endpoint,
            "scheme" => &mut params.scheme,
            "region" => &mut params.region,
            "profile" => &mut params.profile,
            _ => return Err(BucketUrlError::Param(key)),
        };
        if slot.is_some() {
            return Err(BucketUrlError::Duplicate(key));
        }
        let value = percent_decode(v)?;
        if value.is_empty() {
            return Err(BucketUrlError::Empty(key));
        }
        *slot = Some(value);
    }
    Ok(params)
}

/// The endpoint as a URL: an `http(s)://` URL as written (scheme lowercased, trailing `/`
/// dropped), or a bare `host[:port]` over `scheme` (default https).
fn endpoint_url(written: &str, scheme: Option<&str>) -> Result<String, BucketUrlError> {
    let bad = || BucketUrlError::Endpoint(written.to_owned());
    let Some((given, rest)) = written.split_once("://") else {
        if !is_authority(written) {
            return Err(bad());
        }
        return Ok(format!("{}://{written}", scheme.unwrap_or("https")));
    };
    let given = given.to_ascii_lowercase();
    if given != "http" && given != "https" {
        return Err(bad());
    }
    if scheme.is_some_and(|s| s != given) {
        return Err(BucketUrlError::SchemeConflict {
            scheme: scheme.unwrap_or_default().to_owned(),
            endpoint: written.to_owned(),
        });
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = path.trim_end_matches('/');
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%'));
    if !is_authority(authority) || !path_ok {
        return Err(bad());
    }
    Ok(format!("{given}://{authority}{path}"))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`: no user info, path, query or spaces.
fn is_authority(text: &str) -> bool {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let Some((inside, after)) = v6.split_once(']') else {
            return false;
        };
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => ("v6", None),
            _ => match after.strip_prefix(':') {
                Some(port) => ("v6", Some(port)),
                None => return false,
            },
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

/// Decodes `%XX` escapes (Nix's `percentDecode`: no `+` for space).
fn percent_decode(text: &str) -> Result<String, BucketUrlError> {
    let bad = || BucketUrlError::Encoding(text.to_owned());
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Escapes what would change a query value's meaning (`%`, `&`, `=`, `#`, `+`, spaces,
/// control and non-ASCII characters); `:` and `/` stay, so endpoints print as URLs.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b'&' | b'=' | b'#' | b'+') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URL as Ferry understood it: every default spelled out (`endpoint` with its scheme,
/// `region`), in a form both Ferry and Nix read back to the same bucket.
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
                write!(f, "s3://{bucket}?")?;
                if let Some(endpoint) = endpoint {
                    write!(f, "endpoint={}&", percent_encode(endpoint))?;
                }
                write!(f, "region={}", percent_encode(region))?;
                if let Some(profile) = profile {
                    write!(f, "&profile={}", percent_encode(profile))?;
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
