//! The developer's side of the scenario: the real `ferry` binary pointed at the bed's Garage
//! with the test signing key, as a user would run it from a shell.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::process::{Output, capture};
use crate::s3::S3;

/// `ferry` with a bucket, credentials and a key, plus a folder for manifest files.
pub struct Developer {
    ferry: PathBuf,
    bucket_url: String,
    env: Vec<(&'static str, String)>,
    key_file: PathBuf,
    work: tempfile::TempDir,
}

impl Developer {
    /// A developer using `ferry` against `s3`, signing with `key_file`.
    pub fn new(ferry: &Path, s3: &S3, key_file: &Path) -> Result<Developer> {
        Ok(Developer {
            ferry: ferry.to_path_buf(),
            bucket_url: format!(
                "s3://{}?endpoint={}&region={}",
                s3.bucket, s3.endpoint, s3.region
            ),
            env: vec![
                ("AWS_ACCESS_KEY_ID", s3.access_key.clone()),
                ("AWS_SECRET_ACCESS_KEY", s3.secret_key.clone()),
            ],
            key_file: key_file.to_path_buf(),
            work: tempfile::tempdir().context("making the developer's work folder")?,
        })
    }

    /// The bucket URL `ferry` is given, for printing.
    pub fn bucket_url(&self) -> &str {
        &self.bucket_url
    }

    /// The shell line a user would type for `args` (bucket and key come from the
    /// environment in real use), for narration.
    pub fn shown(args: &[&str]) -> String {
        format!("$ ferry {}", args.join(" "))
    }

    /// Runs `ferry ARGS --bucket … [--key-file …]`; fails with its output unless it exits 0.
    pub fn ferry(&self, args: &[&str]) -> Result<Output> {
        let out = self.ferry_status(args)?;
        if !out.success() {
            bail!(
                "`ferry {}` exited {}:\n{}{}",
                args.join(" "),
                out.status,
                out.stdout,
                out.stderr
            );
        }
        Ok(out)
    }

    /// Like [`Developer::ferry`] but returns the output whatever the exit status.
    pub fn ferry_status(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.ferry);
        cmd.args(args).arg("--bucket").arg(&self.bucket_url);
        if takes_key(args.first().copied().unwrap_or_default()) {
            cmd.arg("--key-file").arg(&self.key_file);
        }
        // Progress bars are for terminals; the scenario reads plain lines.
        cmd.env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        capture(&mut cmd, b"")
    }

    /// Writes `manifest` to a file in the work folder and returns its path.
    pub fn write_manifest(&self, name: &str, manifest: &Value) -> Result<PathBuf> {
        let path = self.work.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(manifest)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The live manifest, parsed (`ferry show`).
    pub fn live(&self) -> Result<Value> {
        let out = self.ferry(&["show"])?;
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("`ferry show` printed no manifest:\n{}", out.stdout))
    }
}

/// Verbs that sign (and so need the key file).
fn takes_key(verb: &str) -> bool {
    matches!(verb, "upload" | "push" | "publish" | "rollback")
}
