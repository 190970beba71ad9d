//! A `ferry push` killed at arbitrary points leaves the bucket valid (every narinfo's NAR
//! is there and complete; the live manifest names only uploaded paths), and re-running it
//! finishes the job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{build_app, ferry, keypair, nonce, text};

/// Checks the bucket's invariants; returns the live manifest's store path.
fn assert_valid(bucket: &Path) -> String {
    for entry in std::fs::read_dir(bucket).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("narinfo") {
            continue;
        }
        let info = std::fs::read_to_string(&path).unwrap();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("{} has no {name}", path.display()))
                .to_owned()
        };
        let nar = bucket.join(field("URL: "));
        let size: u64 = field("FileSize: ").parse().unwrap();
        let meta = std::fs::metadata(&nar)
            .unwrap_or_else(|_| panic!("{} names a missing NAR", path.display()));
        assert_eq!(meta.len(), size, "{} is incomplete", nar.display());
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(bucket.join("manifest.json")).unwrap()).unwrap();
    let store_path = manifest["services"][0]["artifact"]["storePath"]
        .as_str()
        .unwrap()
        .to_owned();
    let hash = &store_path["/nix/store/".len().."/nix/store/".len() + 32];
    assert!(
        bucket.join(format!("{hash}.narinfo")).exists(),
        "manifest names {store_path}, which is not uploaded"
    );
    store_path
}

#[test]
fn killed_pushes_leave_the_bucket_valid_and_a_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, _) = keypair(dir.path(), "ferry-pt-kill-1");
    let key = sec.to_str().unwrap();
    let bucket = dir.path().join("bucket");
    let url = format!("file://{}", bucket.display());
    let n = nonce();
    let (app0, _) = build_app(dir.path(), &n, 1);
    let up = ferry(&["upload", "--bucket", &url, "--key-file", key, &app0], &[]);
    assert!(up.status.success(), "{}", text(&up));
    let manifest = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": app0},
                      "hosts": ["h1"], "exec": {"command": "app"}}]
    });
    let file = dir.path().join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let published = ferry(
        &[
            "publish",
            "--bucket",
            &url,
            "--key-file",
            key,
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(published.status.success(), "{}", text(&published));

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    for round in 0..10u32 {
        // Bigger apps in later rounds; kill points spread over the push's lifetime.
        let (app, _) = build_app(dir.path(), &n, 5 + round * 3);
        let delay = Duration::from_millis(u64::from((seed / (round + 1) + round * 37) % 300));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "push",
                "web",
                &app,
                "--bucket",
                &url,
                "--key-file",
                key,
                "--quiet",
            ])
            .env("XDG_CONFIG_HOME", "/nonexistent-ferry-test-config")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait().unwrap();
        let before = assert_valid(&bucket);
        let rerun = ferry(
            &["push", "web", &app, "--bucket", &url, "--key-file", key],
            &[],
        );
        assert!(rerun.status.success(), "round {round}: {}", text(&rerun));
        assert_eq!(
            assert_valid(&bucket),
            app,
            "round {round} (killed after {delay:?}, live was {before})"
        );
    }
}
