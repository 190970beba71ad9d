//! Where the bucket and the signing key come from: the command line (`--bucket`,
//! `--key-file`), the environment (`FERRY_BUCKET`, `FERRY_KEY_FILE`, read by clap), else
//! `~/.config/ferry/config.toml` (`bucket = "…"`, `key_file = "…"`, `zstd_level = N`,
//! `trusted_keys = ["name:base64", …]`); a key nothing names is looked for where the
//! original design keeps it ([`signing_key`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ferry_bucket::{AnyBucket, BucketUrl};
use ferry_schema::SecretKey;
use serde::Deserialize;

use crate::signing_key;

/// `~/.config/ferry/config.toml`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Bucket URL, as Nix writes S3 stores (`s3://BUCKET?profile=P&scheme=https&endpoint=HOST`)
    /// or `file:///DIR`.
    pub bucket: Option<String>,
    /// Secret key file (`name:base64`).
    pub key_file: Option<PathBuf>,
    /// zstd level for NARs (default 3).
    pub zstd_level: Option<i32>,
    /// Public keys (`name:base64`) besides the signing key's own whose signatures ferry
    /// accepts on manifests it edits or re-signs, and on narinfos it finds in the bucket:
    /// colleagues who push to the same bucket, or a CI key.
    pub trusted_keys: Option<Vec<String>>,
    /// The status store hosts report to (`status.bucket` in their agent.toml), read by
    /// `ferry status`: a bucket URL of the same forms as `bucket`.
    pub status_bucket: Option<String>,
}

/// The bucket option every bucket-touching verb takes.
#[derive(Debug, Clone, clap::Args)]
pub struct BucketArgs {
    /// The bucket, as Nix writes S3 stores (`nix copy --to` takes the same URL):
    /// `s3://BUCKET?profile=P&scheme=https&endpoint=HOST&region=R` (`endpoint` may also be
    /// a whole `https://…` URL; no endpoint means AWS; region defaults to us-east-1), or
    /// `file:///DIR`. Default: $FERRY_BUCKET, else `bucket` in ~/.config/ferry/config.toml.
    #[arg(long, env = "FERRY_BUCKET", value_name = "URL")]
    pub bucket: Option<String>,
}

/// The status store option of verbs that read the hosts' reports.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusBucketArgs {
    /// The status store the hosts report to (`status.bucket` in their agent.toml), a bucket
    /// URL like --bucket's. Default: $FERRY_STATUS_BUCKET, else `status_bucket` in
    /// ~/.config/ferry/config.toml.
    #[arg(long, env = "FERRY_STATUS_BUCKET", value_name = "URL")]
    pub status_bucket: Option<String>,
}

/// The signing key option of verbs that sign.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// Secret signing key (`name:base64`, from `ferry keygen` or `nix-store
    /// --generate-binary-cache-key`). Default: $FERRY_KEY_FILE, else `key_file` in
    /// ~/.config/ferry/config.toml, else $NIX_CACHE_KEY (the key or its file's absolute
    /// path), else ~/.config/nix/cache-priv-key.pem (ferry says which it used).
    #[arg(long, env = "FERRY_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

/// `$XDG_CONFIG_HOME/ferry/config.toml`, else `~/.config/ferry/config.toml`.
pub fn config_path() -> Option<PathBuf> {
    signing_key::config_home().map(|dir| dir.join("ferry/config.toml"))
}

/// Parses the config file's text.
pub fn parse_config(text: &str, path: &Path) -> Result<ConfigFile> {
    toml::from_str(text).with_context(|| {
        format!(
            "reading {} (keys: bucket, key_file, zstd_level, trusted_keys, status_bucket)",
            path.display()
        )
    })
}

/// Reads the config file; absent is empty.
pub fn load_config() -> Result<ConfigFile> {
    let Some(path) = config_path() else {
        return Ok(ConfigFile::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_config(&text, &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The bucket URL chosen by flag/env, else the config file.
pub fn bucket_url(args: &BucketArgs, config: &ConfigFile) -> Result<BucketUrl> {
    let Some(text) = args.bucket.as_ref().or(config.bucket.as_ref()) else {
        bail!(
            "no bucket given: pass --bucket s3://BUCKET?profile=…&scheme=https&endpoint=HOST (Nix's S3 store URL) or file:///DIR, set FERRY_BUCKET, or put `bucket = \"…\"` in ~/.config/ferry/config.toml"
        );
    };
    BucketUrl::parse(text).with_context(|| "the bucket URL".to_owned())
}

/// Opens the chosen bucket. A `file://` directory is created if missing, as `nix copy --to
/// file://` does: for the pusher it is a destination, not something to wait for.
pub async fn open_bucket(args: &BucketArgs, config: &ConfigFile) -> Result<(BucketUrl, AnyBucket)> {
    let url = bucket_url(args, config)?;
    if let BucketUrl::Dir(dir) = &url {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the bucket directory {}", dir.display()))?;
    }
    let bucket = AnyBucket::open(&url).await;
    Ok((url, bucket))
}

/// Opens the status store chosen by flag/env, else the config file. Unlike the deploy
/// bucket, a missing `file://` directory is not created: nothing has reported there.
pub async fn open_status_bucket(
    args: &StatusBucketArgs,
    config: &ConfigFile,
) -> Result<(BucketUrl, AnyBucket)> {
    let Some(text) = args
        .status_bucket
        .as_ref()
        .or(config.status_bucket.as_ref())
    else {
        bail!(
            "no status store given: pass --status-bucket URL (the `status.bucket` the hosts report to), set FERRY_STATUS_BUCKET, or put `status_bucket = \"…\"` in ~/.config/ferry/config.toml"
        );
    };
    let url = BucketUrl::parse(text).with_context(|| "the status store URL".to_owned())?;
    let bucket = AnyBucket::open(&url).await;
    Ok((url, bucket))
}

/// Loads the secret key named by flag/env, else the config file, else found in
/// `$NIX_CACHE_KEY` or `~/.config/nix/cache-priv-key.pem` (see [`signing_key`]); a key
/// that nothing named is announced on stderr with where it came from.
pub fn load_key(args: &KeyArgs, config: &ConfigFile) -> Result<SecretKey> {
    load_key_if_any(args, config)?
        .ok_or_else(|| signing_key::missing(signing_key::nix_folder_key().as_deref()))
}

/// [`load_key`] for a verb that can do without a key: `None` when nothing names or holds
/// one (a key that is named but unreadable is still an error).
pub fn load_key_if_any(args: &KeyArgs, config: &ConfigFile) -> Result<Option<SecretKey>> {
    let folder = signing_key::nix_folder_key();
    let existing = folder.as_deref().filter(|p| p.exists());
    let env = std::env::var(signing_key::NIX_CACHE_KEY).ok();
    let named = args.key_file.as_deref().or(config.key_file.as_deref());
    let Some(source) = signing_key::choose(named, env.as_deref(), existing)? else {
        return Ok(None);
    };
    let key = signing_key::read(&source)?;
    if let Some(line) = signing_key::announcement(&source, &key) {
        eprintln!("{line}");
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_over_config_and_missing_bucket_says_how_to_set_it() {
        let config = parse_config(
            "bucket = \"file:///srv/b\"\nzstd_level = 9\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(config.zstd_level, Some(9));
        let none = BucketArgs { bucket: None };
        assert_eq!(
            bucket_url(&none, &config).unwrap(),
            BucketUrl::Dir("/srv/b".into())
        );
        let flag = BucketArgs {
            bucket: Some("s3://x".into()),
        };
        assert!(matches!(
            bucket_url(&flag, &config).unwrap(),
            BucketUrl::S3 { .. }
        ));
        let err = bucket_url(&none, &ConfigFile::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("FERRY_BUCKET"), "{err}");
        assert!(parse_config("buckett = 1", Path::new("c.toml")).is_err());
    }
}
