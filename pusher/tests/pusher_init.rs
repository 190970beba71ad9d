//! `ferry init`, end to end with the real binary: from an empty home and a built closure to
//! a published manifest and a push, through what init writes (config, key, starter
//! manifest) and prints (public key, the NixOS module snippet, evaluated here with the
//! module stand-in the Nix tests use). Refuses to overwrite without `--force`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::{build_app, nonce, text};

/// `ferry ARGS` in `cwd` for a developer whose home is `home`.
fn ferry_in(cwd: &Path, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("FERRY_BUCKET")
        .env_remove("FERRY_KEY_FILE")
        .env_remove("NIX_CACHE_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `services.ferry-agent = { … };` block init printed, as the attribute set's text.
fn snippet(out: &str) -> String {
    let start = out
        .find("services.ferry-agent = {")
        .expect("no module snippet printed");
    let body = &out[start + "services.ferry-agent = ".len()..];
    let end = body
        .find("\n};")
        .or_else(|| body.find("\n  };"))
        .expect("snippet not closed");
    body[..=end].trim_end().to_owned() + "\n}"
}

#[test]
fn init_then_validate_upload_publish_push_on_a_file_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let project = dir.path().join("project");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    let n = nonce();
    let (app1, _) = build_app(dir.path(), &n, 1);
    let (app2, _) = build_app(dir.path(), &n, 2);
    // What `nix build` leaves behind in a project.
    std::os::unix::fs::symlink(&app1, project.join("result")).unwrap();
    let url = format!("file://{}", dir.path().join("bucket").display());

    let init = ferry_in(
        &project,
        &home,
        &["init", "--bucket", &url, "--host", "web-1"],
        &[],
    );
    assert!(init.status.success(), "{}", text(&init));
    let out = stdout(&init);

    // The key: created where the original design keeps it, 0600, its public half printed.
    let secret = home.join(".config/nix/cache-priv-key.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&secret).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let public = std::fs::read_to_string(home.join(".config/nix/cache-pub-key.pem")).unwrap();
    assert!(
        public.starts_with("bucket-1:"),
        "key name from the bucket: {public}"
    );
    assert!(out.contains(&public), "{}", text(&init));

    // The config names the bucket and the key.
    let config = std::fs::read_to_string(home.join(".config/ferry/config.toml")).unwrap();
    let config: toml::Table = toml::from_str(&config).unwrap();
    assert_eq!(config["bucket"].as_str(), Some(url.as_str()));
    assert_eq!(config["key_file"].as_str(), secret.to_str());

    // The starter manifest: the closure in ./result, its name as the service, validates.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(project.join("manifest.json")).unwrap()).unwrap();
    let service = &manifest["services"][0];
    assert_eq!(service["name"], "ferry-pt-app");
    assert_eq!(service["artifact"]["storePath"], app1.as_str());
    assert_eq!(service["hosts"][0], "web-1");
    let valid = ferry_in(&project, &home, &["validate", "manifest.json"], &[]);
    assert_eq!(valid.status.code(), Some(0), "{}", text(&valid));

    // The snippet, evaluated by the module stand-in: the agent gets the bucket, the host
    // name and the key for both closures and manifests.
    let user = snippet(&out);
    let eval = ferry_tests::module_render::eval_json(
        &format!("(import ./nix/tests/eval-module.nix {{ user = {user}; }}).agentToml"),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e:#}\nsnippet:\n{user}"));
    assert_eq!(eval["bucket"], url.as_str(), "{user}");
    assert_eq!(eval["hostName"], "web-1");
    assert_eq!(eval["trustedKeys"][0], public.as_str());
    assert_eq!(eval["manifestKeys"][0], public.as_str());

    // The next steps init names work with nothing else configured.
    let up = ferry_in(&project, &home, &["upload", "./result"], &[]);
    assert!(up.status.success(), "{}", text(&up));
    let published = ferry_in(&project, &home, &["publish", "manifest.json"], &[]);
    assert!(published.status.success(), "{}", text(&published));
    let pushed = ferry_in(&project, &home, &["push", "ferry-pt-app", &app2], &[]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    let shown = ferry_in(&project, &home, &["show"], &[]);
    let live: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(live["services"][0]["artifact"]["storePath"], app2.as_str());
    let verified = ferry_in(
        &project,
        &home,
        &[
            "verify",
            dir.path().join("bucket/manifest.json").to_str().unwrap(),
            "--trusted-key",
            &public,
        ],
        &[],
    );
    assert!(verified.status.success(), "{}", text(&verified));

    // Again: refused, nothing changed; with --force the config and manifest are rewritten
    // but the key is kept (a lost secret key cannot be recovered).
    let manifest_before = std::fs::read(project.join("manifest.json")).unwrap();
    let again = ferry_in(
        &project,
        &home,
        &["init", "--bucket", &url, "--host", "web-2"],
        &[],
    );
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("config.toml") && err.contains("manifest.json") && err.contains("--force"),
        "{}",
        text(&again)
    );
    assert_eq!(
        std::fs::read(project.join("manifest.json")).unwrap(),
        manifest_before
    );
    let forced = ferry_in(
        &project,
        &home,
        &["init", "--bucket", &url, "--host", "web-2", "--force"],
        &[],
    );
    assert!(forced.status.success(), "{}", text(&forced));
    assert_eq!(
        std::fs::read_to_string(home.join(".config/nix/cache-pub-key.pem")).unwrap(),
        public
    );
    assert!(stdout(&forced).contains(&public));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(project.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["services"][0]["hosts"][0], "web-2");
}

#[test]
fn init_without_a_closure_or_key_flags_uses_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let project = dir.path().join("my-api");
    std::fs::create_dir_all(home.join(".config/nix")).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    // A key the developer already has, where the design says: used, not replaced.
    let (sec, _) = support::keypair(dir.path(), "acme-cache-1");
    std::fs::copy(&sec, home.join(".config/nix/cache-priv-key.pem")).unwrap();
    let url = "s3://omni-nix-cache?profile=digitalocean&scheme=https&endpoint=nyc3.digitaloceanspaces.com";

    let init = ferry_in(&project, &home, &["init"], &[("FERRY_BUCKET", url)]);
    assert!(init.status.success(), "{}", text(&init));
    let out = stdout(&init);
    assert!(out.contains("acme-cache-1:"), "{}", text(&init));
    assert!(!home.join(".config/nix/cache-pub-key.pem").exists());
    let err = String::from_utf8_lossy(&init.stderr);
    assert!(
        err.contains("s3://omni-nix-cache?endpoint=https://nyc3.digitaloceanspaces.com&region=us-east-1&profile=digitalocean"),
        "init prints the bucket as understood: {}",
        text(&init)
    );

    // No ./result: the service is named after the folder, with a placeholder store path
    // that still validates, and init says what to replace.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(project.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["services"][0]["name"], "my-api");
    assert!(err.contains("storePath"), "{}", text(&init));
    let valid = ferry_in(&project, &home, &["validate", "manifest.json"], &[]);
    assert_eq!(valid.status.code(), Some(0), "{}", text(&valid));

    // An S3 bucket: the snippet points the agent at the host's own credentials file, and
    // the URL keeps its profile.
    let user = snippet(&out);
    let eval = ferry_tests::module_render::eval_json(
        &format!("import ./nix/tests/eval-module.nix {{ user = {user}; }}"),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e:#}\nsnippet:\n{user}"));
    assert_eq!(eval["agentToml"]["bucket"], url);
    assert_eq!(
        eval["config"]["systemd"]["services"]["ferry-agent"]["serviceConfig"]["LoadCredential"][0],
        "aws:/root/.aws/credentials"
    );
}
