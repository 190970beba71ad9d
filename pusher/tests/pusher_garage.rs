//! `ferry` against the test bed's real Garage: an upload whose objects, read back through
//! Garage, stock `nix copy` accepts; an incremental push; publish, push, history and
//! rollback (re-signed and `--exact`) on the live manifest; unknown service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Instant;

use ferry_tests::{Bed, BedOptions};
use serde_json::{Value, json};
use support::{Target, build_app, keypair, mirror, nix_copy, nonce, text};

async fn live(bed: &Bed) -> (Vec<u8>, Value) {
    let s3 = bed.s3();
    let got = s3
        .client()
        .get_object()
        .bucket(&s3.bucket)
        .key("manifest.json")
        .send()
        .await
        .unwrap();
    let bytes = got.body.collect().await.unwrap().into_bytes().to_vec();
    let value = serde_json::from_slice(&bytes).unwrap();
    (bytes, value)
}

#[tokio::test]
async fn upload_push_publish_history_and_rollback_on_garage() {
    let bed = Bed::start(BedOptions::default()).unwrap();
    let g = Target::garage(&bed);
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-garage-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let (app1, lib) = build_app(dir.path(), &n, 1);
    let (app2, _) = build_app(dir.path(), &n, 2);
    let (app3, _) = build_app(dir.path(), &n, 3);

    // Upload, then read every object back through Garage: stock Nix accepts the bytes.
    let started = Instant::now();
    let up = g.run(&["upload", "--key-file", key, &app1]);
    let upload_time = started.elapsed();
    assert!(up.status.success(), "{}", text(&up));
    eprintln!(
        "upload of a 2-path closure to Garage: {upload_time:?}\n{}",
        text(&up)
    );
    let copy = dir.path().join("mirror");
    assert_eq!(
        mirror(&bed, &copy).await,
        2 + 2 + 1 + 1,
        "2 NARs, 2 narinfos, nix-cache-info, ferry-cache-index.json"
    );
    let copied = nix_copy(&copy, &dir.path().join("store"), &public, &app1);
    assert!(copied.status.success(), "{}", text(&copied));
    assert!(
        dir.path()
            .join("store")
            .join(lib.trim_start_matches('/'))
            .exists()
    );

    // Unknown service before any manifest exists, then publish one.
    let early = g.run(&["push", "web", &app2, "--key-file", key]);
    assert_eq!(early.status.code(), Some(2), "{}", text(&early));
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("ferry publish"),
        "{}",
        text(&early)
    );
    let manifest = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": app1},
                      "hosts": ["h1"], "exec": {"command": "app"}}]
    });
    let file = dir.path().join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let missing_manifest = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": app3},
                      "hosts": ["h1"], "exec": {"command": "app"}}]
    });
    let missing_file = dir.path().join("missing.json");
    std::fs::write(&missing_file, missing_manifest.to_string()).unwrap();
    let refused = g.run(&["publish", missing_file.to_str().unwrap(), "--key-file", key]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(&app3),
        "{}",
        text(&refused)
    );
    let published = g.run(&["publish", file.to_str().unwrap(), "--key-file", key]);
    assert!(published.status.success(), "{}", text(&published));
    let (_, m1) = live(&bed).await;
    assert_eq!(m1["services"][0]["artifact"]["storePath"], app1.as_str());
    assert!(
        m1["signatures"][0]
            .as_str()
            .unwrap()
            .starts_with("ferry-pt-garage-1:")
    );

    // Unknown service against a live manifest.
    let unknown = g.run(&["push", "api", &app2, "--key-file", key]);
    assert_eq!(unknown.status.code(), Some(2));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("service `api` is not in the live manifest") && err.contains("ferry upload"),
        "{err}"
    );

    // Dry run writes nothing; the push uploads exactly the changed path.
    let dry = g.run(&["push", "web", &app2, "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("1 cached, 1 to upload"),
        "{}",
        text(&dry)
    );
    assert_eq!(live(&bed).await.1, m1);
    let started = Instant::now();
    let pushed = g.run(&[
        "push",
        "web",
        &app2,
        "--key-file",
        key,
        "--revision",
        "rev-2",
    ]);
    eprintln!(
        "incremental push through Garage: {:?}\n{}",
        started.elapsed(),
        text(&pushed)
    );
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert!(
        String::from_utf8_lossy(&pushed.stderr).contains("uploaded 1 paths"),
        "{}",
        text(&pushed)
    );
    let (_, m2) = live(&bed).await;
    assert_eq!(m2["services"][0]["artifact"]["storePath"], app2.as_str());
    assert_eq!(m2["services"][0]["revision"], "rev-2");
    assert!(m2["generation"].as_str().unwrap() > m1["generation"].as_str().unwrap());

    let history = g.run(&["history"]);
    let out = String::from_utf8_lossy(&history.stdout).into_owned();
    assert!(history.status.success(), "{}", text(&history));
    let entries: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(entries.len(), 2, "{out}");
    assert!(
        entries[0].contains("live") && entries[0].contains("web@rev-2"),
        "{out}"
    );
    assert!(entries[1].starts_with("2026-01-01T00:00:00Z"), "{out}");

    let diff = g.run(&["diff"]);
    assert!(diff.status.success(), "{}", text(&diff));
    assert!(
        String::from_utf8_lossy(&diff.stdout).contains(&format!("~ web: {app1} -> {app2}")),
        "{}",
        text(&diff)
    );
    let same = g.run(&["diff", "live", "live"]);
    assert!(
        String::from_utf8_lossy(&same.stdout).contains("no service changes"),
        "{}",
        text(&same)
    );

    // Rollback re-signs with a newer generation; --exact copies the archive byte for byte.
    let back = g.run(&["rollback", "--key-file", key]);
    assert!(back.status.success(), "{}", text(&back));
    let (_, m3) = live(&bed).await;
    assert_eq!(m3["services"][0]["artifact"]["storePath"], app1.as_str());
    assert!(m3["generation"].as_str().unwrap() > m2["generation"].as_str().unwrap());
    let exact = g.run(&[
        "rollback",
        "--exact",
        "--to",
        m2["generation"].as_str().unwrap(),
    ]);
    assert!(exact.status.success(), "{}", text(&exact));
    let (bytes, m4) = live(&bed).await;
    let s3 = bed.s3();
    let archived = s3
        .client()
        .get_object()
        .bucket(&s3.bucket)
        .key(format!(
            "manifests/manifest-{}.json",
            m2["generation"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(bytes, archived.to_vec());
    assert_eq!(m4, m2);
    let show = g.run(&["show"]);
    assert_eq!(show.stdout, bytes);
}
