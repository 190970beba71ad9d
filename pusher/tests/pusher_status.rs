//! `ferry status` against the bed's real Garage, with a second bucket as the status store
//! (its own key, as on Spaces): reports written there as hosts write them (`hosts/<host>.json`
//! over S3), read back by the real `ferry` binary, and judged against the live manifest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Output;

use ferry_schema::host_status::manifest_sha256;
use ferry_tests::{Bed, BedOptions, S3};
use serde_json::{Value, json};
use support::{Target, build_app, keypair, nonce, text};

/// A report as an agent writes it, dated now.
fn report(host: &str, sha256: &str, web: Value) -> Value {
    json!({
        "version": 1, "host": host, "agentVersion": "0.1.0",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "everySec": 60,
        "lastTick": {"outcome": "ok", "exitCode": 0, "wallMs": 9},
        "manifest": {"generation": "2026-01-01T00:00:00Z", "sha256": sha256},
        "services": [web],
    })
}

fn web(path: &str, state: &str, message: Option<&str>) -> Value {
    let mut s = json!({"name": "web", "storePath": path, "state": state,
                       "since": "2026-01-01T00:00:01Z"});
    if let Some(m) = message {
        s["message"] = m.into();
    }
    s
}

/// Writes `hosts/<key_host>.json` into the status store with the store's own key.
fn put_report(store: &S3, key_host: &str, doc: &Value) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        store
            .client()
            .put_object()
            .bucket(&store.bucket)
            .key(format!("hosts/{key_host}.json"))
            .body(serde_json::to_vec(doc).unwrap().into())
            .send()
            .await
            .unwrap();
    });
}

/// h2 applied the manifest with digest `sha`, but its new version failed the health check
/// and `path` runs again.
fn h2_rolled_back(store: &S3, sha: &str, path: &str) {
    let back = web(path, "rolled-back", Some("GET /health: 503 after 5 tries"));
    put_report(store, "h2", &report("h2", sha, back));
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The bed's deploy bucket as `ferry` reaches it, with the status store reachable too
/// through its own key (a named profile in a shared credentials file), and that store's URL.
fn with_status_store(bed: &Bed, store: &S3, dir: &std::path::Path) -> (Target, String) {
    let credentials = dir.join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[status]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            store.access_key, store.secret_key
        ),
    )
    .unwrap();
    let status_url = format!(
        "s3://{}?endpoint={}&region={}&profile=status",
        store.bucket, store.endpoint, store.region
    );
    let mut target = Target::garage(bed);
    target.env.push((
        "AWS_SHARED_CREDENTIALS_FILE",
        credentials.to_str().unwrap().to_owned(),
    ));
    (target, status_url)
}

/// Uploads `path` and publishes a manifest running it as `web` on h1 and h2.
fn publish_web(target: &Target, dir: &std::path::Path, key: &str, path: &str) {
    let up = target.run(&["upload", "--key-file", key, path]);
    assert!(up.status.success(), "{}", text(&up));
    let manifest = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": path},
                      "hosts": ["h1", "h2"], "exec": {"command": "app"}}]
    });
    let file = dir.join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let published = target.run(&["publish", file.to_str().unwrap(), "--key-file", key]);
    assert!(published.status.success(), "{}", text(&published));
}

#[test]
fn status_judges_each_named_host_from_its_report_in_the_status_store() {
    let bed = Bed::start(BedOptions::default()).unwrap();
    let store = bed.add_bucket("ferry-status").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (target, status_url) = with_status_store(&bed, &store, dir.path());
    let status = |extra: &[&str]| {
        let mut args = vec!["status", "--status-bucket", &status_url];
        args.extend_from_slice(extra);
        target.run(&args)
    };
    let (sec, _) = keypair(dir.path(), "ferry-pt-status-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let (v1, _) = build_app(dir.path(), &n, 1);
    let (v2, _) = build_app(dir.path(), &n, 2);
    let up = target.run(&["upload", "--key-file", key, &v1]);
    assert!(up.status.success(), "{}", text(&up));
    publish_web(&target, dir.path(), key, &v2);
    let live = target.object("manifest.json").unwrap();
    let sha = manifest_sha256(&live);

    // Only h1 has reported: h2 is silent, and the fleet is not converged.
    put_report(&store, "h1", &report("h1", &sha, web(&v2, "running", None)));
    let out = status(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines = stdout(&out);
    assert!(
        lines.contains("h1  converged   generation 2026-01-01T00:00:00Z"),
        "{lines}"
    );
    assert!(
        lines.contains("h2  silent\n      never reported"),
        "{lines}"
    );

    // h2 applied the manifest but rolled back: failing, with the health message.
    h2_rolled_back(&store, &sha, &v1);
    let out = status(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("h2  failing     generation 2026-01-01T00:00:00Z")
            && stdout(&out).contains("web: rolled-back: GET /health: 503 after 5 tries"),
        "{}",
        text(&out)
    );

    // A report that claims another host's name counts for neither.
    put_report(&store, "h2", &report("h1", &sha, web(&v2, "running", None)));
    let out = status(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("h2  unreadable")
            && stdout(&out).contains("says it is the report of host \"h1\""),
        "{}",
        text(&out)
    );

    // An older manifest applied: behind.
    put_report(
        &store,
        "h2",
        &report("h2", "0ld", web(&v1, "running", None)),
    );
    let out = status(&["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["converged"], false);
    assert_eq!(doc["sha256"], sha.as_str());
    assert_eq!(doc["hosts"][1]["host"], "h2");
    assert_eq!(doc["hosts"][1]["verdict"], "behind");

    // Both run the live manifest healthy: exit 0.
    put_report(&store, "h2", &report("h2", &sha, web(&v2, "running", None)));
    let out = status(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["converged"], true);
    let verdicts: Vec<&str> = doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["converged", "converged"]);

    // No status store named: a clear error, not a guess.
    let out = target.run(&["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no status store given: pass --status-bucket"),
        "{}",
        text(&out)
    );
}

/// Polls the live manifest until its bytes differ from `before` (a verb wrote it).
fn next_live(target: &Target, before: &[u8]) -> Vec<u8> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(now) = target.object("manifest.json")
            && now != before
        {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the manifest was not written"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn push_wait_returns_when_every_host_answered_and_names_the_failures() {
    let bed = Bed::start(BedOptions::default()).unwrap();
    let store = bed.add_bucket("ferry-status").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (target, status_url) = with_status_store(&bed, &store, dir.path());
    let (sec, _) = keypair(dir.path(), "ferry-pt-wait-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let (v1, _) = build_app(dir.path(), &n, 1);
    let (v2, _) = build_app(dir.path(), &n, 2);
    let (v3, _) = build_app(dir.path(), &n, 3);
    publish_web(&target, dir.path(), key, &v1);
    let wait = format!("--status-bucket={status_url}");

    // h1 applies v2 healthy, h2 rolls it back: push --wait exits 1 naming h2, web, why.
    let before = target.object("manifest.json").unwrap();
    let push = target
        .command(&["push", "web", &v2, "--key-file", key, "--wait=60s", &wait])
        .spawn()
        .unwrap();
    let live = next_live(&target, &before);
    let sha = manifest_sha256(&live);
    put_report(&store, "h1", &report("h1", &sha, web(&v2, "running", None)));
    h2_rolled_back(&store, &sha, &v1);
    let out = push.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("h1: converged")
            && err.contains(
                "failed on h2 (failing: web: rolled-back: GET /health: 503 after 5 tries)"
            ),
        "{}",
        text(&out)
    );

    // Both hosts answer v3 healthy: exit 0.
    let before = live;
    let push = target
        .command(&["push", "web", &v3, "--key-file", key, "--wait=60s", &wait])
        .spawn()
        .unwrap();
    let live = next_live(&target, &before);
    let sha = manifest_sha256(&live);
    for h in ["h1", "h2"] {
        put_report(&store, h, &report(h, &sha, web(&v3, "running", None)));
    }
    let out = push.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("runs healthy on all 2 host(s)"),
        "{}",
        text(&out)
    );

    // Nobody answers the rollback within its timeout: exit 1 naming both hosts.
    let out = target.run(&["rollback", "--key-file", key, "--wait=3s", &wait]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("timed out after 3s")
            && err.contains("h1 (behind: has not applied the live manifest yet)")
            && err.contains("h2 (behind"),
        "{}",
        text(&out)
    );

    // --wait without a status store fails before anything is written.
    let before = target.object("manifest.json").unwrap();
    let out = target.run(&["push", "web", &v2, "--key-file", key, "--wait"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no status store given"),
        "{}",
        text(&out)
    );
    assert_eq!(
        target.object("manifest.json").unwrap(),
        before,
        "the manifest changed"
    );
}
