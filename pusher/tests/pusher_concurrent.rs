//! Concurrent writers: 20 rounds of two real `ferry push` runs of different services at
//! once, against the test bed's Garage (which ignores conditional PUTs, so the lease path
//! runs) and a `file://` bucket (conditional writes under a lock). After every round both
//! changes are live, or one push failed with "the manifest changed while pushing — run
//! again" and only the other change is live. Never a silently lost change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Output;

use ferry_tests::{Bed, BedOptions};
use serde_json::{Value, json};
use support::{Target, build_app, keypair, nonce, text};

const CONFLICT: &str = "the manifest changed while pushing — run again";
const ROUNDS: usize = 20;

fn service<'a>(m: &'a Value, name: &str) -> &'a Value {
    m["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no service {name} in {m}"))
}

/// (store path, revision) of `name` in `m`.
fn state(m: &Value, name: &str) -> (String, String) {
    let s = service(m, name);
    (
        s["artifact"]["storePath"].as_str().unwrap().to_owned(),
        s["revision"].as_str().unwrap_or("").to_owned(),
    )
}

/// What the rounds of two concurrent pushes showed.
struct Rounds {
    /// Rounds where both pushes landed.
    both: usize,
    /// Rounds where one push failed with the conflict message.
    one: usize,
    /// Rounds where the pushes met: one re-applied its edit on the other's write, retried
    /// after finding the lease held or the manifest replaced, or gave up with the conflict.
    contended: usize,
}

/// Whether a push's output says it met another writer.
fn met_another(out: &Output) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    err.contains("re-applying") || err.contains(" attempts)") || err.contains(CONFLICT)
}

/// The archive key a successful push reported for the manifest it replaced.
fn archived_key(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    let rest = err
        .split("the manifest it replaced is archived as ")
        .nth(1)
        .unwrap_or_else(|| panic!("no archive key in the push's output:\n{}", text(out)));
    rest.split_whitespace().next().unwrap().to_owned()
}

/// Publishes web and api, then runs the rounds.
fn race_rounds(t: &Target, dir: &Path) -> Rounds {
    let (sec, _) = keypair(dir, "ferry-pt-concurrent-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let web = [
        build_app(dir, &format!("w{n}"), 1).0,
        build_app(dir, &format!("w{n}"), 2).0,
    ];
    let api = [
        build_app(dir, &format!("a{n}"), 1).0,
        build_app(dir, &format!("a{n}"), 2).0,
    ];
    let up = t.run(&[
        "upload",
        "--quiet",
        "--key-file",
        key,
        &web[0],
        &web[1],
        &api[0],
        &api[1],
    ]);
    assert!(up.status.success(), "{}", text(&up));
    let manifest = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [
            {"name": "web", "artifact": {"type": "nix-closure", "storePath": web[0]},
             "hosts": ["h1"], "exec": {"command": "app"}},
            {"name": "api", "artifact": {"type": "nix-closure", "storePath": api[0]},
             "hosts": ["h1"], "exec": {"command": "app"}}
        ]
    });
    let file = dir.join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let published = t.run(&["publish", file.to_str().unwrap(), "--key-file", key]);
    assert!(published.status.success(), "{}", text(&published));

    let (mut both, mut one, mut contended) = (0, 0, 0);
    for round in 0..ROUNDS {
        let before = t.live();
        let pushes = [
            ("web", &web[(round + 1) % 2]),
            ("api", &api[(round + 1) % 2]),
        ];
        let revisions: Vec<String> = pushes
            .iter()
            .map(|(s, _)| format!("{s}-round-{round}"))
            .collect();
        // Both processes start before either is waited for.
        let children: Vec<_> = pushes
            .iter()
            .zip(&revisions)
            .map(|((s, path), rev)| {
                t.command(&["push", s, path, "--key-file", key, "--revision", rev])
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let after = t.live();
        let mut succeeded = 0;
        for (((name, path), rev), out) in pushes.iter().zip(&revisions).zip(&outputs) {
            if out.status.success() {
                succeeded += 1;
                assert_eq!(
                    state(&after, name),
                    ((*path).clone(), rev.clone()),
                    "round {round}: `{name}` pushed successfully but its change is not live\n{}",
                    text(out)
                );
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                if let Some(line) = err.lines().find(|l| l.contains(CONFLICT)) {
                    eprintln!("round {round}: {name}: {line}");
                }
                assert!(
                    err.contains(CONFLICT),
                    "round {round}: `{name}` failed for another reason\n{}",
                    text(out)
                );
                assert_eq!(
                    state(&after, name),
                    state(&before, name),
                    "round {round}: `{name}` failed, yet the live manifest changed it"
                );
            }
        }
        assert!(
            succeeded >= 1,
            "round {round}: both pushes failed\n{}\n{}",
            text(&outputs[0]),
            text(&outputs[1])
        );
        if succeeded == 2 {
            both += 1;
        } else {
            one += 1;
        }
        if outputs.iter().any(met_another) {
            contended += 1;
        }
        // The archive holds the manifest each successful push replaced: `before` for the
        // push that wrote first and, when both landed, the first one's result for the other
        // (its own service as before, the other's change in).
        let archived: Vec<(usize, Value)> = outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.status.success())
            .map(|(i, o)| {
                let key = archived_key(o);
                let bytes = t
                    .object(&key)
                    .unwrap_or_else(|| panic!("round {round}: {key} is not in the bucket"));
                (i, serde_json::from_slice(&bytes).unwrap())
            })
            .collect();
        let first: Vec<usize> = archived
            .iter()
            .filter(|(_, m)| *m == before)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(
            first.len(),
            1,
            "round {round}: the manifest before the round is archived by {first:?} of the successful pushes"
        );
        for (i, m) in &archived {
            if *i == first[0] {
                continue;
            }
            let (other, own) = (pushes[first[0]].0, pushes[*i].0);
            assert_eq!(
                state(m, other),
                ((*pushes[first[0]].1).clone(), revisions[first[0]].clone()),
                "round {round}: `{own}` archived a manifest without `{other}`'s change"
            );
            assert_eq!(
                state(m, own),
                state(&before, own),
                "round {round}: `{own}` archived a manifest with its own change in"
            );
        }
        let history = t.run(&["history"]);
        assert!(history.status.success(), "{}", text(&history));
    }
    assert!(
        t.run(&["show"]).status.success(),
        "the live manifest must still be readable"
    );
    Rounds {
        both,
        one,
        contended,
    }
}

#[test]
fn concurrent_pushes_on_garage_never_lose_a_change() {
    let bed = Bed::start(BedOptions::default()).unwrap();
    let s3 = bed.s3();
    let t = Target::garage(&bed);
    let dir = tempfile::tempdir().unwrap();
    let r = race_rounds(&t, dir.path());
    eprintln!(
        "Garage (lease): {} rounds with both pushes live, {} with one conflict, {} contended",
        r.both, r.one, r.contended
    );
    // Started together, the pushes must have met: otherwise the rounds ran one push after
    // the other and showed nothing about concurrent writers.
    assert!(
        r.contended >= 1,
        "in no round did a push find the other's write or lease ({} rounds)",
        ROUNDS
    );
    // No lease or probe object is left behind once every push has finished.
    let objects = s3.client();
    let listed = tokio::runtime::Runtime::new().unwrap().block_on(async {
        objects
            .list_objects_v2()
            .bucket(&s3.bucket)
            .send()
            .await
            .unwrap()
    });
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert!(!keys.contains(&"manifest.lease"), "{keys:?}");
    assert!(
        !keys.iter().any(|k| k.starts_with("ferry-probe/")),
        "{keys:?}"
    );
}

/// On Garage a lease held for longer than a push is willing to wait (60 s) makes it give up
/// at once with the message (naming the holder); a lapsed one — older than its own TTL by
/// the bucket's clock — is taken over (after waiting for it to lapse); either way no lease
/// of ours is left behind.
#[test]
fn a_held_lease_stops_a_push_and_a_stale_one_is_taken_over() {
    let bed = Bed::start(BedOptions::default()).unwrap();
    let s3 = bed.s3();
    let t = Target::garage(&bed);
    let dir = tempfile::tempdir().unwrap();
    let (sec, _) = keypair(dir.path(), "ferry-pt-lease-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let (app1, _) = build_app(dir.path(), &n, 1);
    let (app2, _) = build_app(dir.path(), &n, 2);
    let up = t.run(&["upload", "--quiet", "--key-file", key, &app1, &app2]);
    assert!(up.status.success(), "{}", text(&up));
    let manifest = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": app1},
                      "hosts": ["h1"], "exec": {"command": "app"}}]
    });
    let file = dir.path().join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let published = t.run(&["publish", file.to_str().unwrap(), "--key-file", key]);
    assert!(published.status.success(), "{}", text(&published));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = s3.client();
    let put_lease = |ttl_secs: i64| {
        let acquired = chrono::Utc::now();
        let body = json!({
            "holder": "colleague:1:abc", "purpose": "ferry push api",
            "acquired": acquired.to_rfc3339(),
            "expires": (acquired + chrono::Duration::seconds(ttl_secs)).to_rfc3339(),
        });
        rt.block_on(
            client
                .put_object()
                .bucket(&s3.bucket)
                .key("manifest.lease")
                .body(body.to_string().into_bytes().into())
                .send(),
        )
        .unwrap();
    };
    let lease_exists = || {
        rt.block_on(
            client
                .head_object()
                .bucket(&s3.bucket)
                .key("manifest.lease")
                .send(),
        )
        .is_ok()
    };

    put_lease(120);
    let busy = t.run(&["push", "web", &app2, "--key-file", key, "--quiet"]);
    assert!(!busy.status.success(), "{}", text(&busy));
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(
        err.contains(CONFLICT) && err.contains("colleague:1:abc") && err.contains("ferry push api"),
        "{}",
        text(&busy)
    );
    assert_eq!(state(&t.live(), "web").0, app1);
    assert!(
        lease_exists(),
        "a push that gave up deleted someone else's lease"
    );

    put_lease(1);
    let taken = t.run(&["push", "web", &app2, "--key-file", key]);
    assert!(taken.status.success(), "{}", text(&taken));
    assert!(
        String::from_utf8_lossy(&taken.stderr)
            .contains("taking over the stale manifest.lease of colleague:1:abc"),
        "{}",
        text(&taken)
    );
    assert_eq!(state(&t.live(), "web").0, app2);
    assert!(!lease_exists(), "the lease was left behind");
}

#[test]
fn concurrent_pushes_on_a_file_bucket_never_lose_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let t = Target::dir(&bucket);
    let r = race_rounds(&t, dir.path());
    eprintln!(
        "file:// (conditional): {} rounds with both pushes live, {} with one conflict, {} contended",
        r.both, r.one, r.contended
    );
    assert!(!bucket.join("manifest.lease").exists());
}

/// Issue 21.6: three rounds of ten `ferry push` processes of ten different services at
/// once against Garage: every one lands (each re-applies its one-service edit on whatever
/// the others wrote), nothing is lost, and every manifest that was replaced is archived.
#[test]
fn ten_concurrent_pushes_of_different_services_all_land_on_garage() {
    const SERVICES: usize = 10;
    const ROUNDS: u32 = 3;
    let bed = Bed::start(BedOptions::default()).unwrap();
    let t = Target::garage(&bed);
    let dir = tempfile::tempdir().unwrap();
    let (sec, _) = keypair(dir.path(), "ferry-pt-ten-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let (first, _) = build_app(dir.path(), &n, 1);
    let names: Vec<String> = (0..SERVICES).map(|i| format!("svc{i}")).collect();
    let manifest = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": names.iter().map(|name| json!(
            {"name": name, "artifact": {"type": "nix-closure", "storePath": first},
             "hosts": ["h1"], "exec": {"command": "app"}}
        )).collect::<Vec<_>>()
    });
    let up = t.run(&["upload", "--quiet", "--key-file", key, &first]);
    assert!(up.status.success(), "{}", text(&up));
    let file = dir.path().join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let published = t.run(&["publish", file.to_str().unwrap(), "--key-file", key]);
    assert!(published.status.success(), "{}", text(&published));

    let mut landed = 0;
    for round in 0..ROUNDS {
        let apps: Vec<String> = (0..SERVICES)
            .map(|i| build_app(dir.path(), &format!("{n}s{i}"), round + 2).0)
            .collect();
        let mut upload = vec!["upload", "--quiet", "--key-file", key];
        upload.extend(apps.iter().map(String::as_str));
        let up = t.run(&upload);
        assert!(up.status.success(), "{}", text(&up));
        let before = t.live();
        let started = std::time::Instant::now();
        let children: Vec<_> = names
            .iter()
            .zip(&apps)
            .map(|(name, app)| {
                t.command(&[
                    "push",
                    name,
                    app,
                    "--key-file",
                    key,
                    "--revision",
                    &format!("{name}-round-{round}"),
                    "--quiet",
                ])
                .spawn()
                .unwrap()
            })
            .collect();
        let outputs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let took = started.elapsed();
        let live = t.live();
        let ok = outputs.iter().filter(|o| o.status.success()).count();
        eprintln!("round {round}: {ok} of {SERVICES} concurrent pushes landed in {took:?}");
        for ((name, app), out) in names.iter().zip(&apps).zip(&outputs) {
            if out.status.success() {
                assert_eq!(
                    state(&live, name),
                    (app.clone(), format!("{name}-round-{round}")),
                    "round {round}: `{name}` pushed successfully but is not live (a lost update)"
                );
            } else {
                assert!(
                    String::from_utf8_lossy(&out.stderr).contains(CONFLICT),
                    "round {round}: `{name}` failed for another reason\n{}",
                    text(out)
                );
                assert_eq!(state(&live, name), state(&before, name));
            }
        }
        let failed: Vec<String> = outputs
            .iter()
            .filter(|o| !o.status.success())
            .map(text)
            .collect();
        assert_eq!(
            ok,
            SERVICES,
            "round {round}: pushes of different services failed:\n{}",
            failed.join("\n")
        );
        landed += ok;
    }
    // Every manifest a push replaced is archived: the published one and every one between.
    let objects = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(support::objects(&bed));
    let archived: Vec<&String> = objects
        .keys()
        .filter(|k| k.starts_with("manifests/manifest-"))
        .collect();
    assert_eq!(archived.len(), landed, "{archived:?}");
    assert!(
        !objects.contains_key("manifest.lease"),
        "a lease was left behind"
    );
}
