//! Shared by the pusher's end-to-end tests: running the real `ferry` binary, building tiny
//! real closures with the machine's nix-build, keys, and stock `nix copy` checks.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Three derivations: a shared library, and two apps that reference it. `nonce` makes
/// every test's store paths its own.
const EXPRESSION: &str = r#"
{ nonce, version }:
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  };
  lib = mk "ferry-pt-lib-${nonce}" "mkdir $out; seq 1 50000 > $out/data";
in mk "ferry-pt-app-${nonce}-${version}" "mkdir $out; echo ${lib} > $out/lib; echo ${version} > $out/version; seq 1 ${version}0000 > $out/more"
"#;

/// Runs `ferry` with `args` and extra environment.
pub fn ferry(args: &[&str], env: &[(&str, &str)]) -> Output {
    ferry_in(Path::new("."), args, env)
}

/// Runs `ferry` with `args` and extra environment in the folder `cwd` (for relative
/// arguments such as `./result`).
pub fn ferry_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.current_dir(cwd);
    cmd.args(args)
        .env_remove("FERRY_BUCKET")
        .env_remove("FERRY_KEY_FILE");
    // A config file of the machine's user must not leak into tests.
    cmd.env("XDG_CONFIG_HOME", "/nonexistent-ferry-test-config");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh signing key pair made by `ferry keygen`: (secret file, public key text).
pub fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let sec = dir.join(format!("{name}.sec"));
    let public = dir.join(format!("{name}.pub"));
    let out = ferry(
        &[
            "keygen",
            "--name",
            name,
            "--secret-key-file",
            sec.to_str().unwrap(),
            "--public-key-file",
            public.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    (
        sec,
        std::fs::read_to_string(public).unwrap().trim().to_owned(),
    )
}

/// Builds app `version` (1, 2, …) of the tiny closure; returns (app, lib) store paths.
pub fn build_app(dir: &Path, nonce: &str, version: u32) -> (String, String) {
    let file = dir.join("pt.nix");
    std::fs::write(&file, EXPRESSION).unwrap();
    let out = Command::new("nix-build")
        .args(["--no-out-link", file.to_str().unwrap()])
        .args([
            "--argstr",
            "nonce",
            nonce,
            "--argstr",
            "version",
            &version.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "nix-build: {}", text(&out));
    let app = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let lib = std::fs::read_to_string(Path::new(&app).join("lib"))
        .unwrap()
        .trim()
        .to_owned();
    (app, lib)
}

/// `ferry upload APP` then `ferry publish` of a first manifest naming it as service `web`
/// on `host` (command `app`), as a test's starting point; fails the test if either fails.
pub fn publish_web(dir: &Path, url: &str, key: &str, app: &str, host: &str) {
    let up = ferry(&["upload", "--bucket", url, "--key-file", key, app], &[]);
    assert!(up.status.success(), "{}", text(&up));
    let manifest = serde_json::json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": app},
                      "hosts": [host], "exec": {"command": "app"}}]
    });
    let file = dir.join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let published = ferry(
        &[
            "publish",
            "--bucket",
            url,
            "--key-file",
            key,
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(published.status.success(), "{}", text(&published));
}

/// A nonce unique to this process and moment.
pub fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}x{t}", std::process::id())
}

/// Stock `nix copy --from file://CACHE` of `path` into a fresh chroot store at `store`,
/// trusting only `public_key`.
pub fn nix_copy(cache: &Path, store: &Path, public_key: &str, path: &str) -> Output {
    Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "copy"])
        .arg("--from")
        .arg(format!("file://{}", cache.display()))
        .arg("--to")
        .arg(store)
        .args(["--option", "substituters", ""])
        .args(["--option", "trusted-public-keys", public_key])
        .arg(path)
        .output()
        .unwrap()
}

/// Number of NAR files in a `file://` bucket.
pub fn nar_count(bucket: &Path) -> usize {
    std::fs::read_dir(bucket.join("nar")).map_or(0, |d| d.count())
}

/// A bucket URL and the environment its credentials need: `ferry … --bucket URL`.
pub struct Target {
    /// `s3://…` or `file://…`.
    pub url: String,
    /// Credentials, as environment variables.
    pub env: Vec<(&'static str, String)>,
    /// The bed's Garage, for reading objects directly (`None` for `file://`).
    pub s3: Option<ferry_tests::S3>,
}

impl Target {
    /// The test bed's Garage bucket.
    pub fn garage(bed: &ferry_tests::Bed) -> Target {
        let s3 = bed.s3();
        Target {
            url: format!(
                "s3://{}?endpoint={}&region={}",
                s3.bucket, s3.endpoint, s3.region
            ),
            env: vec![
                ("AWS_ACCESS_KEY_ID", s3.access_key.clone()),
                ("AWS_SECRET_ACCESS_KEY", s3.secret_key.clone()),
            ],
            s3: Some(s3.clone()),
        }
    }

    /// A `file://` bucket in `dir`.
    pub fn dir(dir: &Path) -> Target {
        Target {
            url: format!("file://{}", dir.display()),
            env: Vec::new(),
            s3: None,
        }
    }

    /// The object `key` as stored, read directly (not through ferry); `None` when absent.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(dir) = self.url.strip_prefix("file://") {
            return std::fs::read(Path::new(dir).join(key)).ok();
        }
        let s3 = self.s3.as_ref().expect("an s3:// target has the bed's S3");
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let got = s3
                .client()
                .get_object()
                .bucket(&s3.bucket)
                .key(key)
                .send()
                .await
                .ok()?;
            Some(got.body.collect().await.unwrap().into_bytes().to_vec())
        })
    }

    /// `ferry ARGS --bucket URL` with the credentials, not started yet (output piped).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(args)
            .args(["--bucket", &self.url])
            .env_remove("FERRY_BUCKET")
            .env_remove("FERRY_KEY_FILE")
            // A config file of the machine's user must not leak into tests.
            .env("XDG_CONFIG_HOME", "/nonexistent-ferry-test-config")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `ferry ARGS --bucket URL` to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The live manifest (`ferry show`).
    pub fn live(&self) -> serde_json::Value {
        let out = self.run(&["show"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Every object in the bed's bucket, read through Garage's S3 API: key → bytes.
pub async fn objects(bed: &ferry_tests::Bed) -> std::collections::BTreeMap<String, Vec<u8>> {
    let s3 = bed.s3();
    let client = s3.client();
    let listed = client
        .list_objects_v2()
        .bucket(&s3.bucket)
        .send()
        .await
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for object in listed.contents() {
        let key = object.key().unwrap();
        let got = client
            .get_object()
            .bucket(&s3.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        out.insert(
            key.to_owned(),
            got.body.collect().await.unwrap().into_bytes().to_vec(),
        );
    }
    out
}

/// Copies every object of the bed's bucket into `dir` (a `file://` cache layout) through
/// Garage's S3 API; returns how many.
pub async fn mirror(bed: &ferry_tests::Bed, dir: &Path) -> usize {
    let all = objects(bed).await;
    for (key, bytes) in &all {
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    all.len()
}

/// In-process runs of the pusher's verbs over any bucket (a `FaultyBucket` in the fault
/// tests), with the lease shortened so that tests can wait for one to lapse.
pub mod inproc {
    use std::process::ExitCode;
    use std::time::Duration;

    use ferry_bucket::{Bucket, Fetched};
    use ferry_pusher::command::{gc, push, rollback};
    use ferry_pusher::fleet_wait::WaitArgs;
    use ferry_pusher::lease::LeaseTimings;
    use ferry_pusher::manifest_write::WriteOptions;
    use ferry_pusher::settings::{BucketArgs, ConfigFile, KeyArgs, StatusBucketArgs};
    use ferry_schema::SecretKey;

    /// The lease TTL of the fault tests.
    pub const TTL: Duration = Duration::from_secs(3);

    /// Write options with a 3 s lease (and the default retries).
    pub fn short_lease() -> WriteOptions {
        WriteOptions {
            lease: LeaseTimings {
                ttl: TTL,
                settle: Duration::from_millis(500),
            },
            ..WriteOptions::default()
        }
    }

    /// The secret key in `file`.
    pub fn secret_key(file: &std::path::Path) -> SecretKey {
        SecretKey::parse(&std::fs::read_to_string(file).unwrap()).unwrap()
    }

    /// No `--wait`.
    pub fn no_wait() -> WaitArgs {
        WaitArgs {
            wait: None,
            status: StatusBucketArgs {
                status_bucket: None,
            },
        }
    }

    /// `ferry push SERVICE PATH --revision REV --quiet`.
    pub fn push_args(service: &str, path: &str, revision: &str) -> push::Args {
        push::Args {
            service: Some(service.to_owned()),
            installable: Some(path.to_owned()),
            system: None,
            bucket: BucketArgs { bucket: None },
            wait: no_wait(),
            key: KeyArgs { key_file: None },
            revision: Some(revision.to_owned()),
            zstd_level: None,
            compression: ferry_pusher::command::upload::CompressionArg::Zstd,
            dry_run: false,
            quiet: true,
            force: false,
        }
    }

    /// Runs `ferry push` in process.
    pub async fn push(
        bucket: &impl Bucket,
        args: &push::Args,
        key: &SecretKey,
        options: &WriteOptions,
    ) -> anyhow::Result<ExitCode> {
        push::run_with(
            args,
            bucket,
            "the test bucket",
            Some(key.clone()),
            &ConfigFile::default(),
            options,
        )
        .await
    }

    /// `ferry gc --keep N --min-age-hours 0 --delete`.
    pub fn gc_args(keep: usize) -> gc::Args {
        gc::Args {
            bucket: BucketArgs { bucket: None },
            keep: Some(keep),
            keep_days: 30,
            min_age_hours: 0,
            delete: true,
            dry_run: false,
            key: KeyArgs { key_file: None },
        }
    }

    /// `ferry rollback --to GEN`.
    pub fn rollback_args(to: &str) -> rollback::Args {
        rollback::Args {
            bucket: BucketArgs { bucket: None },
            wait: no_wait(),
            key: KeyArgs { key_file: None },
            to: Some(to.to_owned()),
            steps: 1,
            exact: false,
            allow_missing: false,
            force: false,
        }
    }

    /// The live manifest as JSON.
    pub async fn live(bucket: &impl Bucket) -> serde_json::Value {
        match bucket.get("manifest.json", None).await.unwrap() {
            Fetched::Found { bytes, .. } => serde_json::from_slice(&bytes).unwrap(),
            other => panic!("no live manifest: {other:?}"),
        }
    }

    /// (storePath, revision) of `name` in manifest `m`.
    pub fn service_state(m: &serde_json::Value, name: &str) -> (String, String) {
        let s = m["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no service {name} in {m}"));
        (
            s["artifact"]["storePath"].as_str().unwrap().to_owned(),
            s["revision"].as_str().unwrap_or("").to_owned(),
        )
    }

    /// Waits until no lease younger than its TTL is in the bucket (by the store's clock).
    pub async fn until_no_fresh_lease(bucket: &impl Bucket) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match bucket.get_timed("manifest.lease").await.unwrap() {
                None => return,
                Some(t) if t.age.unwrap() > TTL + Duration::from_secs(1) => return,
                Some(_) => {}
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the lease never lapsed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Checks that `store_path`'s closure is whole in the bucket: its narinfo, its NAR
    /// (complete), and the same for every reference.
    pub async fn assert_closure_present(bucket: &impl Bucket, store_path: &str) {
        let mut todo = vec![store_path.to_owned()];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(path) = todo.pop() {
            if !seen.insert(path.clone()) {
                continue;
            }
            let base = path.rsplit('/').next().unwrap();
            let key = format!("{}.narinfo", &base[..32]);
            let Fetched::Found { bytes, .. } = bucket.get(&key, None).await.unwrap() else {
                panic!("{path} (named by the live manifest's closure) has no {key} in the bucket");
            };
            let text = String::from_utf8(bytes).unwrap();
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("{key} has no {name}"))
                    .to_owned()
            };
            let url = field("URL: ");
            let size: usize = field("FileSize: ").parse().unwrap();
            let Fetched::Found { bytes: nar, .. } = bucket.get(&url, None).await.unwrap() else {
                panic!("{key} of {path} names {url}, which is not in the bucket");
            };
            assert_eq!(nar.len(), size, "{url} is incomplete");
            for r in text
                .lines()
                .find_map(|l| l.strip_prefix("References:"))
                .unwrap_or("")
                .split_whitespace()
            {
                todo.push(format!("/nix/store/{r}"));
            }
        }
    }
}
