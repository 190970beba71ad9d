//! The developer of a fleet with a status store: the real `ferry` with the deploy bucket's
//! key in its environment and the status store's key as the `status` profile of a
//! shared-credentials file, adding `--key-file` to the verbs that sign and
//! `--status-bucket` to `status` and `--wait`; and what the fleet tests do beside it: wait
//! for a spawned `ferry`, tick a host by hand, read a host's report. Shared by the fleet
//! status and waves tests and the `push --wait` benchmark.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::agent_bed::AGENT;
use crate::process::capture;
use crate::{Host, Output, S3};

/// `ferry` as the developer runs it against a deploy bucket and a status store.
pub struct FleetDev {
    ferry: PathBuf,
    bucket_url: String,
    status_url: String,
    env: Vec<(&'static str, String)>,
    key_file: PathBuf,
    dir: tempfile::TempDir,
}

impl FleetDev {
    /// `ferry` at `ferry`, `deploy` and `status` buckets, signing with `key_file`.
    pub fn new(ferry: PathBuf, deploy: &S3, status: &S3, key_file: &Path) -> Result<FleetDev> {
        let dir = tempfile::tempdir()?;
        let credentials = dir.path().join("credentials");
        std::fs::write(
            &credentials,
            format!(
                "[status]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                status.access_key, status.secret_key
            ),
        )?;
        Ok(FleetDev {
            ferry,
            bucket_url: deploy.url(),
            status_url: format!("{}&profile=status", status.url()),
            env: vec![
                ("AWS_ACCESS_KEY_ID", deploy.access_key.clone()),
                ("AWS_SECRET_ACCESS_KEY", deploy.secret_key.clone()),
                (
                    "AWS_SHARED_CREDENTIALS_FILE",
                    credentials.to_string_lossy().into_owned(),
                ),
            ],
            key_file: key_file.to_path_buf(),
            dir,
        })
    }

    /// A scratch folder of the developer's (manifests to publish), removed with it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ferry ARGS` with the buckets, key and credentials, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.ferry);
        cmd.args(args).arg("--bucket").arg(&self.bucket_url);
        if matches!(
            args.first().copied(),
            Some("upload" | "push" | "publish" | "rollback")
        ) {
            cmd.arg("--key-file").arg(&self.key_file);
        }
        if args.iter().any(|a| a.starts_with("--wait")) || args.first() == Some(&"status") {
            cmd.arg("--status-bucket").arg(&self.status_url);
        }
        cmd.env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `ferry ARGS`, echoing what it printed on stderr; any exit status.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let out = capture(&mut self.command(args), b"")?;
        eprintln!(
            "--- ferry {} (exit {})\n{}{}",
            args.join(" "),
            out.status,
            out.stdout,
            out.stderr
        );
        Ok(out)
    }

    /// Runs `ferry ARGS`; fails with what it printed unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> Result<Output> {
        let out = capture(&mut self.command(args), b"")?;
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

    /// Starts `ferry ARGS` with its output piped (a `--wait` that returns once the hosts
    /// answered).
    pub fn spawn(&self, args: &[&str]) -> Result<Child> {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ferry")
    }
}

/// What a spawned `ferry` printed, once it returned (at most `limit` from now), echoed on
/// stderr; killed and an error past `limit`.
pub fn finished(mut child: Child, what: &str, limit: Duration) -> Result<Output> {
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{what} did not return within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = Output::from(child.wait_with_output()?);
    eprintln!(
        "--- {what} (exit {})\n{}{}",
        out.status, out.stdout, out.stderr
    );
    Ok(out)
}

/// One `ferry-agent reconcile` in `host` (called `name` in the echo), echoed on stderr.
pub fn tick(host: &Host, name: &str) -> Result<Output> {
    let out = host.exec(&[AGENT, "reconcile"])?;
    eprintln!(
        "--- reconcile on {name} (exit {})\n{}{}",
        out.status, out.stdout, out.stderr
    );
    Ok(out)
}

/// `host`'s report in the status store, as JSON; an error when it has written none.
pub async fn report(status: &S3, host: &str) -> Result<Value> {
    let got = status
        .client()
        .get_object()
        .bucket(&status.bucket)
        .key(format!("hosts/{host}.json"))
        .send()
        .await
        .with_context(|| format!("{host} has written no report"))?;
    let bytes = got.body.collect().await?.into_bytes();
    serde_json::from_slice(&bytes).context("the report is not JSON")
}
