//! What `push`, `publish` and `rollback` open before they write a manifest, in one order:
//! the signing key (none for a dry run, or for `rollback --exact`, which copies signed bytes
//! as they are), the deploy bucket, and, with `--wait` on a run that writes, the status
//! store, opened and listed before anything is written so a wait that could not follow
//! fails without publishing.

use std::process::ExitCode;

use anyhow::Result;
use ferry_bucket::AnyBucket;
use ferry_schema::SecretKey;

use crate::fleet_wait::{WaitArgs, Waiter, follow_if_waiting};
use crate::settings::{BucketArgs, ConfigFile, KeyArgs, load_config, load_key, open_bucket};

/// The verb's key, bucket and waiter, ready for its `run_with`.
pub struct Writing {
    /// The config file.
    pub config: ConfigFile,
    /// The signing key; `None` when the run signs nothing.
    pub key: Option<SecretKey>,
    /// The bucket's URL, for messages.
    pub url: String,
    /// The deploy bucket.
    pub bucket: AnyBucket,
    waiter: Option<Waiter>,
}

impl Writing {
    /// Opens them. `signs`: whether the run signs (loads the key); `writes`: whether it
    /// writes at all (a dry run does not wait).
    pub async fn open(
        key: &KeyArgs,
        bucket: &BucketArgs,
        wait: &WaitArgs,
        signs: bool,
        writes: bool,
    ) -> Result<Writing> {
        let config = load_config()?;
        let key = if signs {
            Some(load_key(key, &config)?)
        } else {
            None
        };
        let (url, bucket) = open_bucket(bucket, &config).await?;
        let waiter = if writes {
            Waiter::prepare(wait, &config).await?
        } else {
            None
        };
        Ok(Writing {
            config,
            key,
            url: url.to_string(),
            bucket,
            waiter,
        })
    }

    /// After the write that ended with `code`: follows the hosts' reports when `--wait`
    /// asked for it (and the write succeeded), else returns `code`.
    pub async fn follow(self, code: ExitCode) -> Result<ExitCode> {
        follow_if_waiting(self.waiter, &self.bucket, code).await
    }
}
