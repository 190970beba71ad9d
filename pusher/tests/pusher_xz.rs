//! `ferry upload --compression xz` to a `file://` bucket: the narinfos say `Compression: xz`
//! and point at `.nar.xz` files holding xz streams, and stock Nix 2.8 copies the closure
//! from that bucket into a fresh store, trusting only the signing key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{build_app, ferry, keypair, nix_copy, nonce, text};

#[test]
fn xz_upload_is_read_by_stock_nix() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-xz-1");
    let (app, lib) = build_app(dir.path(), &nonce(), 2);
    let bucket = dir.path().join("bucket");
    let url = format!("file://{}", bucket.display());
    let out = ferry(
        &[
            "upload",
            "--compression",
            "xz",
            "--bucket",
            &url,
            "--key-file",
            sec.to_str().unwrap(),
            &app,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));

    let mut narinfos = 0;
    for entry in std::fs::read_dir(&bucket).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "narinfo") {
            continue;
        }
        narinfos += 1;
        let narinfo = std::fs::read_to_string(&path).unwrap();
        assert!(narinfo.lines().any(|l| l == "Compression: xz"), "{narinfo}");
        let nar_url = narinfo
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .unwrap();
        assert!(
            nar_url.starts_with("nar/") && nar_url.ends_with(".nar.xz"),
            "{nar_url}"
        );
        let nar = std::fs::read(bucket.join(nar_url)).unwrap();
        assert_eq!(&nar[..6], b"\xfd7zXZ\x00", "{nar_url} is not an xz stream");
    }
    assert_eq!(narinfos, 2, "one narinfo each for the app and its library");

    let store = dir.path().join("store");
    let copied = nix_copy(&bucket, &store, &public, &app);
    assert!(copied.status.success(), "{}", text(&copied));
    for path in [&app, &lib] {
        assert!(
            store.join(path.trim_start_matches('/')).exists(),
            "{path} missing from the fresh store"
        );
    }
    assert_eq!(
        std::fs::read_to_string(store.join(app.trim_start_matches('/')).join("version")).unwrap(),
        "2\n"
    );
}
