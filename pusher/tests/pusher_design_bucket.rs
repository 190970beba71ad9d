//! The original design's bucket settings, used as they are written there, against the test
//! bed's real Garage: the bucket URL in Nix's own S3 store form (`endpoint` a bare host,
//! `scheme` beside it, `profile` naming a section of the developer's
//! `~/.aws/credentials`), with no AWS variables in the environment.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use ferry_tests::{Bed, BedOptions};
use serde_json::json;
use support::{build_app, keypair, nonce, text};

/// `ferry ARGS` as a developer whose home is `home` runs it: credentials only from
/// `~/.aws/credentials`, nothing from the machine's user.
fn ferry_at_home(home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"));
    for var in [
        "FERRY_BUCKET",
        "FERRY_KEY_FILE",
        "NIX_CACHE_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.output().unwrap()
}

#[test]
fn nix_form_url_with_a_named_profile_reaches_garage() {
    let bed = Bed::start(BedOptions::default()).unwrap();
    let s3 = bed.s3();
    let host_port = s3.endpoint.strip_prefix("http://").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    // Only the named profile holds the bucket's key: `[default]` is someone else's.
    std::fs::write(
        home.join(".aws/credentials"),
        format!(
            "[default]\naws_access_key_id = GK000000000000000000000000\naws_secret_access_key = {}\n\n\
             [digitalocean]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            "0".repeat(64),
            s3.access_key,
            s3.secret_key
        ),
    )
    .unwrap();
    // The design's URL with the bed's Garage in place of nyc3.digitaloceanspaces.com (and its
    // `http`, since the bed has no TLS; Garage checks the signing region, hence `region`).
    let url = format!(
        "s3://{}?profile=digitalocean&scheme=http&endpoint={host_port}&region={}",
        s3.bucket, s3.region
    );
    let (sec, _) = keypair(dir.path(), "ferry-pt-design-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let (app1, _) = build_app(dir.path(), &n, 1);
    let (app2, _) = build_app(dir.path(), &n, 2);

    let up = ferry_at_home(
        &home,
        &["upload", "--bucket", &url, "--key-file", key, &app1],
    );
    assert!(up.status.success(), "{}", text(&up));
    let manifest = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": app1},
                      "hosts": ["h1"], "exec": {"command": "app"}}]
    });
    let file = dir.path().join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let published = ferry_at_home(
        &home,
        &[
            "publish",
            file.to_str().unwrap(),
            "--bucket",
            &url,
            "--key-file",
            key,
        ],
    );
    assert!(published.status.success(), "{}", text(&published));
    let pushed = ferry_at_home(
        &home,
        &["push", "web", &app2, "--bucket", &url, "--key-file", key],
    );
    assert!(pushed.status.success(), "{}", text(&pushed));
    let shown = ferry_at_home(&home, &["show", "--bucket", &url]);
    assert!(shown.status.success(), "{}", text(&shown));
    let live: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(live["services"][0]["artifact"]["storePath"], app2.as_str());

    // The same URL with a profile the file does not have: refused by Garage, not served by
    // whatever else the machine has.
    let other = url.replace("profile=digitalocean", "profile=nobody");
    let refused = ferry_at_home(&home, &["show", "--bucket", &other]);
    assert!(!refused.status.success(), "{}", text(&refused));
}
