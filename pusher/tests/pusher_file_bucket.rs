//! `ferry upload` to a `file://` bucket, checked with stock Nix: the cache it writes is
//! accepted by `nix copy` with the signing key and refused with another; an incremental
//! upload sends only the changed path; bad input gets errors that say what to do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{build_app, ferry, keypair, nar_count, nix_copy, nonce, text};

#[test]
fn nix_copy_accepts_the_upload_with_the_key_and_refuses_it_with_another() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-good-1");
    let (_, other) = keypair(dir.path(), "ferry-pt-other-1");
    let (app, lib) = build_app(dir.path(), &nonce(), 1);
    let bucket = dir.path().join("bucket");
    let url = format!("file://{}", bucket.display());
    let out = ferry(
        &[
            "upload",
            "--bucket",
            &url,
            "--key-file",
            sec.to_str().unwrap(),
            &app,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), app);
    assert_eq!(
        std::fs::read_to_string(bucket.join("nix-cache-info"))
            .unwrap()
            .lines()
            .next(),
        Some("StoreDir: /nix/store")
    );

    let store = dir.path().join("store-good");
    let copied = nix_copy(&bucket, &store, &public, &app);
    assert!(copied.status.success(), "{}", text(&copied));
    for path in [&app, &lib] {
        let inside = store.join(path.trim_start_matches('/'));
        assert!(
            inside.exists(),
            "{} missing from the fresh store",
            inside.display()
        );
    }
    assert_eq!(
        std::fs::read_to_string(store.join(app.trim_start_matches('/')).join("version")).unwrap(),
        "1\n"
    );

    let refused = nix_copy(&bucket, &dir.path().join("store-other"), &other, &app);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("lacks a valid signature"),
        "{}",
        text(&refused)
    );
}

#[test]
fn incremental_upload_sends_exactly_the_changed_path() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-inc-1");
    let n = nonce();
    let (app1, lib1) = build_app(dir.path(), &n, 1);
    let (app2, lib2) = build_app(dir.path(), &n, 2);
    assert_eq!(lib1, lib2, "both apps share the library");
    let bucket = dir.path().join("bucket");
    let url = format!("file://{}", bucket.display());
    let key = sec.to_str().unwrap();

    let first = ferry(&["upload", "--bucket", &url, "--key-file", key, &app1], &[]);
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(nar_count(&bucket), 2);
    let again = ferry(&["upload", "--bucket", &url, "--key-file", key, &app1], &[]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("uploaded 0 paths"),
        "{}",
        text(&again)
    );
    assert_eq!(nar_count(&bucket), 2);

    let second = ferry(&["upload", "--bucket", &url, "--key-file", key, &app2], &[]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("uploaded 1 paths")
            && String::from_utf8_lossy(&second.stderr).contains("1 already cached"),
        "{}",
        text(&second)
    );
    assert_eq!(nar_count(&bucket), 3, "exactly one NAR more");
    let copied = nix_copy(&bucket, &dir.path().join("store"), &public, &app2);
    assert!(copied.status.success(), "{}", text(&copied));
}

#[test]
fn bad_input_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-bad-1");
    let url = format!("file://{}", dir.path().join("bucket").display());
    let (app, _) = build_app(dir.path(), &nonce(), 1);

    let missing = ferry(
        &[
            "upload",
            "--bucket",
            &url,
            "--key-file",
            "/nonexistent/k.sec",
            &app,
        ],
        &[],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/k.sec"),
        "{}",
        text(&missing)
    );
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("ferry keygen"),
        "{}",
        text(&missing)
    );

    let public_file = dir.path().join("given-the-public-key.sec");
    std::fs::write(&public_file, &public).unwrap();
    let wrong = ferry(
        &[
            "upload",
            "--bucket",
            &url,
            "--key-file",
            public_file.to_str().unwrap(),
            &app,
        ],
        &[],
    );
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("64-byte ed25519 secret key"),
        "{}",
        text(&wrong)
    );

    let gone = "/nix/store/00000000000000000000000000000000-ferry-not-there";
    let absent = ferry(
        &[
            "upload",
            "--bucket",
            &url,
            "--key-file",
            sec.to_str().unwrap(),
            gone,
        ],
        &[],
    );
    assert_eq!(absent.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&absent.stderr)
            .contains(&format!("store path {gone} does not exist")),
        "{}",
        text(&absent)
    );

    let unreachable = ferry(
        &[
            "upload",
            "--bucket",
            "s3://b?endpoint=http://127.0.0.1:9&region=garage",
            "--key-file",
            sec.to_str().unwrap(),
            &app,
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "GK000000000000000000000000"),
            ("AWS_SECRET_ACCESS_KEY", "0"),
        ],
    );
    assert_eq!(unreachable.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unreachable.stderr).contains("bucket unreachable"),
        "{}",
        text(&unreachable)
    );

    let no_bucket = ferry(&["upload", "--key-file", sec.to_str().unwrap(), &app], &[]);
    assert!(
        String::from_utf8_lossy(&no_bucket.stderr).contains("FERRY_BUCKET"),
        "{}",
        text(&no_bucket)
    );
}
