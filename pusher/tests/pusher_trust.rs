//! What the pusher trusts in the bucket, with the real `ferry` binary on a `file://` bucket
//! (the behaviour does not depend on the store): a narinfo it did not sign is not taken
//! as uploaded; an invalid live manifest does not block the publish that fixes it; and it
//! never signs a live or archived manifest that no trusted key signed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::json;
use support::{build_app, ferry, keypair, nix_copy, nonce, text};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn narinfo_key(store_path: &str) -> String {
    let base = store_path.rsplit('/').next().unwrap();
    format!("{}.narinfo", &base[..32])
}

/// A bucket with `web` published at `app` by `key`; returns the bucket URL.
fn published(dir: &Path, bucket: &Path, key: &str, app: &str) -> String {
    let url = format!("file://{}", bucket.display());
    let up = ferry(&["upload", "--bucket", &url, "--key-file", key, app], &[]);
    assert!(up.status.success(), "{}", text(&up));
    let manifest = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": app},
                      "hosts": ["h1"], "exec": {"command": "app"}}]
    });
    let file = dir.join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let out = ferry(
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
    assert!(out.status.success(), "{}", text(&out));
    url
}

/// Issue 21.3: a narinfo signed by a key the pusher no longer uses (a rotated key) and a
/// planted one without a signature, pointing at no NAR, are uploaded again; afterwards
/// stock Nix trusting only the pusher's key fetches the closure.
#[test]
fn upload_replaces_narinfos_not_signed_by_a_trusted_key() {
    let dir = tempfile::tempdir().unwrap();
    let (old_key, _) = keypair(dir.path(), "ferry-pt-rotated-1");
    let (new_key, new_public) = keypair(dir.path(), "ferry-pt-rotated-2");
    let (app, lib) = build_app(dir.path(), &nonce(), 1);
    let bucket = dir.path().join("bucket");
    let url = format!("file://{}", bucket.display());
    let up = ferry(
        &[
            "upload",
            "--bucket",
            &url,
            "--key-file",
            old_key.to_str().unwrap(),
            &app,
        ],
        &[],
    );
    assert!(up.status.success(), "{}", text(&up));
    // The library's narinfo is replaced by a planted one: no signature, no NAR.
    let planted = format!(
        "StorePath: {lib}\nURL: nar/planted.nar.zst\nCompression: zstd\nFileHash: sha256:0000000000000000000000000000000000000000000000000000\nFileSize: 1\nNarHash: sha256:0000000000000000000000000000000000000000000000000000\nNarSize: 1\nReferences: \n"
    );
    std::fs::write(bucket.join(narinfo_key(&lib)), planted).unwrap();

    let again = ferry(
        &[
            "upload",
            "--bucket",
            &url,
            "--key-file",
            new_key.to_str().unwrap(),
            &app,
        ],
        &[],
    );
    assert!(again.status.success(), "{}", text(&again));
    eprintln!("{}", text(&again));
    let copied = nix_copy(&bucket, &dir.path().join("store"), &new_public, &app);
    assert!(
        copied.status.success(),
        "Nix trusting only the new key cannot fetch the closure: the upload kept narinfos it did not sign\n{}",
        text(&copied)
    );
    assert!(
        stderr(&again).contains("uploaded 2 paths"),
        "{}",
        text(&again)
    );
}

/// Issue 21.4: an unparsable live manifest does not block `ferry publish good.json`; its
/// bytes are archived as they are and a line says what was replaced.
#[test]
fn publish_replaces_an_invalid_live_manifest_and_keeps_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, _) = keypair(dir.path(), "ferry-pt-invalid-1");
    let key = sec.to_str().unwrap();
    let (app, _) = build_app(dir.path(), &nonce(), 1);
    let bucket = dir.path().join("bucket");
    let url = published(dir.path(), &bucket, key, &app);
    let bad = b"{\"version\": 1, \"generation\": \"2026-03-01T00:00:00Z\", \"services\": [oops";
    std::fs::write(bucket.join("manifest.json"), bad).unwrap();

    let good = json!({
        "version": 1, "generation": "2026-04-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": app},
                      "hosts": ["h1"], "exec": {"command": "app", "args": ["fixed"]}}]
    });
    let file = dir.path().join("good.json");
    std::fs::write(&file, good.to_string()).unwrap();
    let out = ferry(
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
    assert!(out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("invalid") && l.contains("manifest.json"))
        .unwrap_or_else(|| panic!("no line says an invalid manifest was replaced\n{err}"));
    let archived = line
        .split_whitespace()
        .find(|w| w.starts_with("manifests/"))
        .unwrap_or_else(|| panic!("the line does not name the archive: {line}"))
        .trim_end_matches([',', ';', '.', ')']);
    assert_eq!(
        std::fs::read(bucket.join(archived)).unwrap(),
        bad,
        "the invalid bytes were not archived as they were"
    );
    let live: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bucket.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(live["services"][0]["exec"]["args"][0], "fixed");
    // history and rollback still work beside the odd archive.
    let history = ferry(&["history", "--bucket", &url], &[]);
    assert!(history.status.success(), "{}", text(&history));
}

/// Issue 14.5: `ferry rollback` to an archived manifest that no trusted key signed (planted
/// with an extra service) is refused; with `--force` it first shows the services it is
/// about to sign. A colleague's key listed in the config file is trusted.
#[test]
fn rollback_refuses_an_unsigned_archive_with_an_extra_service() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, _) = keypair(dir.path(), "ferry-pt-trust-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let (app1, _) = build_app(dir.path(), &n, 1);
    let (app2, _) = build_app(dir.path(), &n, 2);
    let bucket = dir.path().join("bucket");
    let url = published(dir.path(), &bucket, key, &app1);
    let up = ferry(&["upload", "--bucket", &url, "--key-file", key, &app2], &[]);
    assert!(up.status.success(), "{}", text(&up));
    let pushed = ferry(
        &["push", "web", &app2, "--bucket", &url, "--key-file", key],
        &[],
    );
    assert!(pushed.status.success(), "{}", text(&pushed));
    // Planted: an unsigned archive that adds a service.
    let generation = "2026-01-02T00:00:00Z";
    let planted = json!({
        "version": 1, "generation": generation,
        "services": [
            {"name": "web", "artifact": {"type": "nix-closure", "storePath": app1},
             "hosts": ["h1"], "exec": {"command": "app"}},
            {"name": "evil", "artifact": {"type": "nix-closure", "storePath": app1},
             "hosts": ["h1"], "exec": {"command": "app"}}
        ]
    });
    let archive = bucket.join(format!("manifests/manifest-{generation}.json"));
    std::fs::write(&archive, planted.to_string()).unwrap();
    let live_before = std::fs::read(bucket.join("manifest.json")).unwrap();

    let refused = ferry(
        &[
            "rollback",
            "--to",
            generation,
            "--bucket",
            &url,
            "--key-file",
            key,
        ],
        &[],
    );
    assert_eq!(
        refused.status.code(),
        Some(1),
        "rollback signed an archive no trusted key signed\n{}",
        text(&refused)
    );
    let err = stderr(&refused);
    assert!(
        err.contains(&format!("manifests/manifest-{generation}.json"))
            && err.contains("not signed by a trusted key")
            && err.contains("--force"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        std::fs::read(bucket.join("manifest.json")).unwrap(),
        live_before
    );

    let forced = ferry(
        &[
            "rollback",
            "--to",
            generation,
            "--bucket",
            &url,
            "--key-file",
            key,
            "--force",
        ],
        &[],
    );
    assert!(forced.status.success(), "{}", text(&forced));
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&forced.stdout),
        stderr(&forced)
    );
    assert!(shown.contains("+ evil"), "{}", text(&forced));

    // A manifest signed by a colleague whose key is in the config file is trusted.
    let (colleague, colleague_public) = keypair(dir.path(), "ferry-pt-colleague-1");
    let signed = dir.path().join("colleague.json");
    let mut by_colleague = planted.clone();
    by_colleague["generation"] = json!("2026-01-03T00:00:00Z");
    std::fs::write(&signed, by_colleague.to_string()).unwrap();
    let sign = ferry(
        &[
            "sign",
            signed.to_str().unwrap(),
            "--key-file",
            colleague.to_str().unwrap(),
            "--out",
            bucket
                .join("manifests/manifest-2026-01-03T00:00:00Z.json")
                .to_str()
                .unwrap(),
        ],
        &[],
    );
    assert!(sign.status.success(), "{}", text(&sign));
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("ferry")).unwrap();
    std::fs::write(
        config.join("ferry/config.toml"),
        format!("trusted_keys = [\"{colleague_public}\"]\n"),
    )
    .unwrap();
    let trusted = ferry(
        &[
            "rollback",
            "--to",
            "2026-01-03T00:00:00Z",
            "--bucket",
            &url,
            "--key-file",
            key,
        ],
        &[("XDG_CONFIG_HOME", config.to_str().unwrap())],
    );
    assert!(trusted.status.success(), "{}", text(&trusted));
}

/// Issue 14.5: `ferry push` refuses to edit and sign a live manifest that no trusted key
/// signed (written straight into the bucket).
#[test]
fn push_refuses_an_unsigned_live_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, _) = keypair(dir.path(), "ferry-pt-trust-2");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let (app1, _) = build_app(dir.path(), &n, 1);
    let (app2, _) = build_app(dir.path(), &n, 2);
    let bucket = dir.path().join("bucket");
    let url = published(dir.path(), &bucket, key, &app1);
    let planted = json!({
        "version": 1, "generation": "2026-02-01T00:00:00Z",
        "services": [
            {"name": "web", "artifact": {"type": "nix-closure", "storePath": app1},
             "hosts": ["h1"], "exec": {"command": "app"}},
            {"name": "evil", "artifact": {"type": "nix-closure", "storePath": app1},
             "hosts": ["h1"], "exec": {"command": "app"}}
        ]
    });
    std::fs::write(bucket.join("manifest.json"), planted.to_string()).unwrap();
    let refused = ferry(
        &["push", "web", &app2, "--bucket", &url, "--key-file", key],
        &[],
    );
    assert_eq!(
        refused.status.code(),
        Some(1),
        "push signed a live manifest no trusted key signed\n{}",
        text(&refused)
    );
    assert!(
        stderr(&refused).contains("not signed by a trusted key"),
        "{}",
        text(&refused)
    );
    let live: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bucket.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(live, planted, "the planted live manifest was replaced");
}
