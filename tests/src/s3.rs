//! How tests reach a bed's Garage: endpoint, region, bucket and key, an aws-sdk-s3 client set
//! up the way Garage needs, and a folder upload (to seed a bucket with a binary cache).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use ferry_bucket::{BucketUrl, S3Bucket, S3Settings};

/// Connection details of a bed's bucket.
#[derive(Clone, Debug)]
pub struct S3 {
    /// `http://<bridge address>:<free port>`, reachable from the tests and from inside the
    /// hosts.
    pub endpoint: String,
    /// Always `garage`.
    pub region: String,
    /// The bucket the bed made.
    pub bucket: String,
    /// Access key id (`GK…`).
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
}

impl S3 {
    /// An S3 client for the bed: path style, checksums only when required (Garage rejects
    /// the SDK's default CRC32 trailers), static credentials (the machine's AWS settings are
    /// ignored).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let credentials = Credentials::new(
            self.access_key.clone(),
            self.secret_key.clone(),
            None,
            None,
            "ferry-testbed",
        );
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(credentials)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// The bucket's URL as a user writes it for `ferry --bucket` or agent.toml.
    pub fn url(&self) -> String {
        format!(
            "s3://{}?endpoint={}&region={}",
            self.bucket, self.endpoint, self.region
        )
    }

    /// An S3 shared-credentials file's text with the bed's key as its `[default]` profile.
    pub fn credentials_text(&self) -> String {
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            self.access_key, self.secret_key
        )
    }

    /// The bucket as Ferry opens it from its own settings: [`S3::url`] parsed by
    /// ferry-bucket, and `S3Bucket::new` with the key in a shared-credentials file written
    /// to `dir` (as agent.toml's `credentials.file`), so path style, checksums, retries,
    /// timeouts and multipart uploads are Ferry's and not [`S3::client`]'s.
    pub async fn ferry_bucket(&self, dir: &Path) -> Result<S3Bucket> {
        let file = dir.join("ferry-s3-credentials");
        std::fs::write(&file, self.credentials_text())
            .with_context(|| format!("writing {}", file.display()))?;
        let url = self.url();
        let BucketUrl::S3 {
            bucket,
            endpoint,
            region,
            profile,
        } = BucketUrl::parse(&url).with_context(|| format!("parsing {url}"))?
        else {
            bail!("{url} is not an s3:// URL");
        };
        Ok(S3Bucket::new(&S3Settings {
            bucket,
            endpoint,
            region: Some(region),
            profile,
            credentials_file: Some(file),
            ..S3Settings::default()
        })
        .await)
    }

    /// Uploads every file under `dir` to `<prefix><relative path>` in the bucket. Files whose
    /// name ends in `.narinfo` go last, so a reader never sees a narinfo before its NAR.
    pub async fn upload_dir(&self, dir: &Path, prefix: &str) -> Result<usize> {
        let mut files = Vec::new();
        collect_files(dir, &mut files)?;
        files.sort_by_key(|path| path.extension().is_some_and(|ext| ext == "narinfo"));
        let client = self.client();
        for path in &files {
            let relative = path
                .strip_prefix(dir)
                .with_context(|| format!("{} is not under {}", path.display(), dir.display()))?;
            let key = format!("{prefix}{}", relative.display());
            let body = ByteStream::from_path(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(body)
                .send()
                .await
                .with_context(|| {
                    format!(
                        "uploading {key} to bucket {} at {}",
                        self.bucket, self.endpoint
                    )
                })?;
        }
        Ok(files.len())
    }
}

fn collect_files(dir: &Path, into: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.is_dir() {
            collect_files(&path, into)?;
        } else {
            into.push(path);
        }
    }
    Ok(())
}
