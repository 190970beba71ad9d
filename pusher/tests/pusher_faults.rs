//! Writers under faults, against the test bed's real Garage (no conditional writes, so the
//! lease decides): `ferry push`, `ferry gc` run in process over a `FaultyBucket` that
//! delays or holds chosen store calls, with the lease shortened to 3 s so that a test can
//! wait for one to lapse. Each test is a way a change could be lost: a writer stalled past
//! its lease, a writer deleting a lease it no longer holds, a lease judged by a wrong clock,
//! a concurrent push of the same service, and `ferry gc` racing a push.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Instant;

use ferry_bucket::fault::{At, Fault, FaultyBucket, Gate, Op, Rule};
use ferry_bucket::{Bucket, S3Bucket};
use ferry_schema::{Manifest, sign_manifest};
use ferry_tests::{Bed, BedOptions};
use serde_json::json;
use support::inproc::{
    TTL, assert_closure_present, gc_args, live, push, push_args, secret_key, service_state,
    short_lease, until_no_fresh_lease,
};
use support::{Target, build_app, keypair, nonce, text};

const CONFLICT: &str = "the manifest changed while pushing — run again";

/// A bed, its Garage as a bucket, a key, and two versions each of `web` and `api`
/// uploaded, with `web` and `api` at version 1 published.
struct Setup {
    bed: Bed,
    dir: tempfile::TempDir,
    key_file: std::path::PathBuf,
    web: [String; 2],
    api: [String; 2],
}

impl Setup {
    fn new() -> Setup {
        let bed = Bed::start(BedOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (key_file, _) = keypair(dir.path(), "ferry-pt-faults-1");
        let n = nonce();
        let web = [
            build_app(dir.path(), &format!("w{n}"), 1).0,
            build_app(dir.path(), &format!("w{n}"), 2).0,
        ];
        let api = [
            build_app(dir.path(), &format!("a{n}"), 1).0,
            build_app(dir.path(), &format!("a{n}"), 2).0,
        ];
        let t = Target::garage(&bed);
        let key = key_file.to_str().unwrap();
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
        let file = dir.path().join("m.json");
        std::fs::write(&file, manifest.to_string()).unwrap();
        let published = t.run(&["publish", file.to_str().unwrap(), "--key-file", key]);
        assert!(published.status.success(), "{}", text(&published));
        Setup {
            bed,
            dir,
            key_file,
            web,
            api,
        }
    }

    fn bucket(&self) -> S3Bucket {
        let s3 = self.bed.s3();
        S3Bucket::from_client(s3.client(), &s3.bucket)
    }

    fn faulty(&self) -> FaultyBucket<S3Bucket> {
        FaultyBucket::new(self.bucket(), 1)
    }
}

/// Both pushes succeeded and both changes are live, or exactly one failed with the
/// conflict message and only the other change is live.
fn assert_none_lost(
    live: &serde_json::Value,
    results: &[(&str, &str, &str, &anyhow::Result<std::process::ExitCode>)],
    before: &serde_json::Value,
) {
    let mut failed = 0;
    for (service, path, revision, result) in results {
        match result {
            Ok(_) => assert_eq!(
                service_state(live, service),
                ((*path).to_owned(), (*revision).to_owned()),
                "`ferry push {service}` succeeded but its change is not live: a lost update\nlive: {live:#}"
            ),
            Err(e) => {
                failed += 1;
                let msg = format!("{e:#}");
                assert!(
                    msg.contains(CONFLICT),
                    "`ferry push {service}` failed for another reason: {msg}"
                );
                assert_eq!(
                    service_state(live, service),
                    service_state(before, service),
                    "`ferry push {service}` failed, yet its change is live"
                );
            }
        }
    }
    assert!(failed <= 1, "both pushes failed");
}

/// Issue 21.1: writer A's archive PUT is held until A's lease has lapsed; B pushes another
/// service meanwhile. Both changes survive, or one push fails with the message.
#[tokio::test]
async fn a_writer_stalled_past_its_lease_loses_no_update() {
    let s = Setup::new();
    let key = secret_key(&s.key_file);
    let options = short_lease();
    let plain = s.bucket();
    let before = live(&plain).await;
    let a_bucket = s.faulty();
    let gate = Gate::new();
    a_bucket.rule(Rule::on(
        Op::Put,
        "manifests/",
        Fault::Hold(At::Before, gate.clone()),
    ));
    let (a_args, b_args) = (
        push_args("web", &s.web[1], "web-a"),
        push_args("api", &s.api[1], "api-b"),
    );
    let a = push(&a_bucket, &a_args, &key, &options);
    let b = async {
        gate.reached().await;
        // A stalls at its archive write until no lease of it is valid any more.
        until_no_fresh_lease(&plain).await;
        let b = push(&plain, &b_args, &key, &options).await;
        gate.open();
        b
    };
    let (a, b) = tokio::join!(a, b);
    let now = live(&plain).await;
    eprintln!("A: {a:?}\nB: {b:?}");
    assert_none_lost(
        &now,
        &[
            ("web", &s.web[1], "web-a", &a),
            ("api", &s.api[1], "api-b", &b),
        ],
        &before,
    );
}

/// The record of a lease another ferry holds now, for 30 s.
fn their_lease() -> String {
    json!({
        "holder": "colleague:1:abc", "purpose": "ferry push api",
        "acquired": chrono::Utc::now().to_rfc3339(),
        "expires": (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc3339(),
    })
    .to_string()
}

/// Issue 21.1: writer A's manifest write is done, then A stalls past its lease before
/// giving it back; meanwhile another writer takes the lapsed lease over. A must not delete
/// the other writer's lease.
#[tokio::test]
async fn a_stalled_writer_never_deletes_a_lease_it_no_longer_holds() {
    let s = Setup::new();
    let key = secret_key(&s.key_file);
    let options = short_lease();
    let plain = s.bucket();
    let a_bucket = s.faulty();
    let gate = Gate::new();
    // A is held when it gives the lease back: at its read of the lease before deleting it
    // (the second plain read of the lease; the first is the read-back after the settle),
    // or at the delete itself (a release that does not read first).
    a_bucket.rule(
        Rule::on(
            Op::Get,
            "manifest.lease",
            Fault::Hold(At::Before, gate.clone()),
        )
        .skip(1)
        .times(1),
    );
    a_bucket.rule(
        Rule::on(
            Op::Delete,
            "manifest.lease",
            Fault::Hold(At::Before, gate.clone()),
        )
        .times(1),
    );
    let a_args = push_args("web", &s.web[1], "web-a");
    let a = push(&a_bucket, &a_args, &key, &options);
    let other = async {
        gate.reached().await;
        until_no_fresh_lease(&plain).await;
        // Another ferry takes the lapsed lease over (its record, as it writes one).
        let theirs = their_lease();
        plain
            .put("manifest.lease", theirs.clone().into_bytes())
            .await
            .unwrap();
        gate.open();
        theirs
    };
    let (a, theirs) = tokio::join!(a, other);
    assert!(a.is_ok(), "{a:?}");
    let lease = plain.get_timed("manifest.lease").await.unwrap();
    assert_eq!(
        lease.map(|t| String::from_utf8(t.bytes).unwrap()),
        Some(theirs),
        "writer A deleted a lease that another writer held"
    );
}

/// Issue 21.1: A's manifest write lands but its answer is held until A's lease has
/// lapsed. A cannot know whether its write landed before the lapse: it must say so rather
/// than report success, and leave a lease that is no longer its own alone.
#[tokio::test]
async fn a_write_answered_after_the_lease_lapsed_is_reported_not_trusted() {
    let s = Setup::new();
    let key = secret_key(&s.key_file);
    let options = short_lease();
    let plain = s.bucket();
    let a_bucket = s.faulty();
    let gate = Gate::new();
    a_bucket.rule(Rule::on(
        Op::Put,
        "manifest.json",
        Fault::Hold(At::After, gate.clone()),
    ));
    let a_args = push_args("web", &s.web[1], "web-a");
    let a = push(&a_bucket, &a_args, &key, &options);
    let other = async {
        gate.reached().await;
        until_no_fresh_lease(&plain).await;
        let theirs = their_lease();
        plain
            .put("manifest.lease", theirs.clone().into_bytes())
            .await
            .unwrap();
        gate.open();
        theirs
    };
    let (a, theirs) = tokio::join!(a, other);
    let err = format!(
        "{:#}",
        a.expect_err("a write answered after the lease lapsed was trusted")
    );
    assert!(
        err.contains("may still land") && err.contains("ferry show"),
        "{err}"
    );
    // It did land (while the lease held), and the other writer's lease is untouched.
    assert_eq!(
        service_state(&live(&plain).await, "web"),
        (s.web[1].clone(), "web-a".to_owned())
    );
    let lease = plain.get_timed("manifest.lease").await.unwrap();
    assert_eq!(
        lease.map(|t| String::from_utf8(t.bytes).unwrap()),
        Some(theirs)
    );
}

/// Issue 21.1: a lease written a moment ago by a ferry whose clock is ten minutes slow
/// (its `expires` is in our past) is held, not taken over: the store's clock says how old
/// it is. The push goes on only once the store says the lease's own TTL (3 s) has passed.
#[tokio::test]
async fn a_fresh_lease_from_a_slow_clock_is_respected() {
    let s = Setup::new();
    let key = secret_key(&s.key_file);
    let plain = s.bucket();
    let acquired = chrono::Utc::now() - chrono::Duration::minutes(10);
    let record = json!({
        "holder": "colleague:1:slowclock", "purpose": "ferry push api",
        "acquired": acquired.to_rfc3339(),
        "expires": (acquired + chrono::Duration::seconds(3)).to_rfc3339(),
    });
    plain
        .put("manifest.lease", record.to_string().into_bytes())
        .await
        .unwrap();
    let planted = Instant::now();
    let a_bucket = s.faulty();
    let result = push(
        &a_bucket,
        &push_args("web", &s.web[1], "web-a"),
        &key,
        &short_lease(),
    )
    .await;
    let wrote = a_bucket
        .calls()
        .iter()
        .find(|c| c.key == "manifest.json" && c.op.writes())
        .map(|c| c.at);
    match (&result, wrote) {
        (Ok(_), Some(at)) => assert!(
            at.duration_since(planted) >= TTL,
            "manifest.json written {:?} after a 3 s lease was taken: the lease was judged by the local clock",
            at.duration_since(planted)
        ),
        (Err(e), None) => assert!(format!("{e:#}").contains(CONFLICT), "{e:#}"),
        other => panic!("unexpected: {other:?}"),
    }
}

/// Issue 21.6 (same service): A reads the live manifest and stalls; B pushes the same
/// service; A must fail with the message, and B's change stays.
#[tokio::test]
async fn a_concurrent_push_of_the_same_service_fails_with_the_message() {
    let s = Setup::new();
    let key = secret_key(&s.key_file);
    let options = short_lease();
    let plain = s.bucket();
    let a_bucket = s.faulty();
    let gate = Gate::new();
    // A's first narinfo lookup comes after it read the live manifest.
    a_bucket.rule(Rule::on(Op::Exists, "", Fault::Hold(At::Before, gate.clone())).times(1));
    let (a_args, b_args) = (
        push_args("web", &s.web[1], "web-a"),
        push_args("web", &s.web[0], "web-b"),
    );
    let a = push(&a_bucket, &a_args, &key, &options);
    let b = async {
        gate.reached().await;
        let b = push(&plain, &b_args, &key, &options).await;
        gate.open();
        b
    };
    let (a, b) = tokio::join!(a, b);
    assert!(b.is_ok(), "{b:?}");
    let err = format!(
        "{:#}",
        a.expect_err("A overwrote B's change of the same service")
    );
    assert!(err.contains(CONFLICT), "{err}");
    assert_eq!(
        service_state(&live(&plain).await, "web"),
        (s.web[0].clone(), "web-b".to_owned())
    );
}

/// Publishes `web` at `old`, then pushes `web` at `new`, so that `old` is named only by an
/// archived manifest (which `gc --keep 0` does not keep).
async fn make_old_unreferenced(s: &Setup, old: &str, new: &str) {
    let t = Target::garage(&s.bed);
    let key = s.key_file.to_str().unwrap();
    let manifest = json!({
        "version": 1, "generation": "2026-02-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": old},
                      "hosts": ["h1"], "exec": {"command": "app"}}]
    });
    let file = s.dir.path().join("old.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let published = t.run(&["publish", file.to_str().unwrap(), "--key-file", key]);
    assert!(published.status.success(), "{}", text(&published));
    let pushed = t.run(&["push", "web", new, "--key-file", key, "--quiet"]);
    assert!(pushed.status.success(), "{}", text(&pushed));
}

/// Issue 21.2, one order: gc plans (the old path is garbage), then a push makes the live
/// manifest name that path again (it is in the cache, so nothing is uploaded), then gc
/// deletes. The live manifest's closure must still be whole.
#[tokio::test]
async fn gc_that_planned_before_a_push_reused_a_path_does_not_delete_it() {
    let s = Setup::new();
    let key = secret_key(&s.key_file);
    let options = short_lease();
    make_old_unreferenced(&s, &s.web[0], &s.web[1]).await;
    let plain = s.bucket();
    let gc_bucket = s.faulty();
    let gate = Gate::new();
    // Held before its first deletion, or before it takes the lease to delete.
    gc_bucket.rule(Rule::on(Op::Delete, "", Fault::Hold(At::Before, gate.clone())).times(1));
    gc_bucket.rule(
        Rule::on(
            Op::GetTimed,
            "manifest.lease",
            Fault::Hold(At::Before, gate.clone()),
        )
        .times(1),
    );
    let (gc_args, push_args) = (gc_args(0), push_args("web", &s.web[0], "back-to-v1"));
    let gc = ferry_pusher::command::gc::run_with(
        &gc_args,
        &gc_bucket,
        "the test bucket",
        &options,
        None,
    );
    let pusher = async {
        gate.reached().await;
        let pushed = push(&plain, &push_args, &key, &options).await;
        gate.open();
        pushed
    };
    let (collected, pushed) = tokio::join!(gc, pusher);
    assert!(pushed.is_ok(), "{pushed:?}");
    eprintln!("gc: {collected:?}");
    let now = live(&plain).await;
    assert_eq!(service_state(&now, "web").0, s.web[0]);
    assert_closure_present(&plain, &s.web[0]).await;
}

/// Issue 21.2, the other order: a push plans (the old path is in the cache, nothing to
/// upload) and stalls before writing the manifest; gc deletes that path; the push goes
/// on. The live manifest's closure must still be whole.
#[tokio::test]
async fn a_push_whose_reused_path_gc_deleted_meanwhile_uploads_it_again() {
    let s = Setup::new();
    let key = secret_key(&s.key_file);
    let options = short_lease();
    make_old_unreferenced(&s, &s.web[0], &s.web[1]).await;
    let plain = s.bucket();
    let push_bucket = s.faulty();
    let gate = Gate::new();
    // The push holds at the conditional-write probe, which it asks at its start, beside
    // reading the live manifest and the cache index (and claiming the lease, which gc then
    // waits out): the push plans from what it read before gc deleted.
    push_bucket.rule(Rule::on(Op::Probe, "", Fault::Hold(At::Before, gate.clone())).times(1));
    let (gc_args, push_args) = (gc_args(0), push_args("web", &s.web[0], "back-to-v1"));
    let p = push(&push_bucket, &push_args, &key, &options);
    let gc = async {
        gate.reached().await;
        let collected = ferry_pusher::command::gc::run_with(
            &gc_args,
            &plain,
            "the test bucket",
            &options,
            None,
        )
        .await;
        gate.open();
        collected
    };
    let (pushed, collected) = tokio::join!(p, gc);
    eprintln!("gc: {collected:?}");
    assert!(pushed.is_ok(), "{pushed:?}");
    let now = live(&plain).await;
    assert_eq!(service_state(&now, "web").0, s.web[0]);
    assert_closure_present(&plain, &s.web[0]).await;
}

/// Issue 19: a push checks the live manifest and the closure while its lease record
/// settles, and only the read-back after the settle says whether those checks count. Here
/// another writer's record replaces A's during the settle, and that writer changes `api`
/// (after A's check read the manifest) and gives the lease back. A's read-back finds the
/// lease not its own, so A must not write what it checked: it tries again on the new
/// manifest, and both changes are live.
#[tokio::test]
async fn checks_made_while_the_lease_settles_count_only_if_it_stays_ours() {
    let s = Setup::new();
    let key = secret_key(&s.key_file);
    let options = short_lease();
    let plain = s.bucket();
    let a_bucket = s.faulty();
    let (checked, settled) = (Gate::new(), Gate::new());
    // A's second read of manifest.json (the first is the push's own read) is its check
    // under the lease; its first plain read of the lease is the read-back after the settle.
    a_bucket.rule(
        Rule::on(
            Op::Get,
            "manifest.json",
            Fault::Hold(At::After, checked.clone()),
        )
        .skip(1)
        .times(1),
    );
    a_bucket.rule(
        Rule::on(
            Op::Get,
            "manifest.lease",
            Fault::Hold(At::Before, settled.clone()),
        )
        .times(1),
    );
    let a_args = push_args("web", &s.web[1], "web-a");
    let a = push(&a_bucket, &a_args, &key, &options);
    let other = async {
        checked.reached().await;
        checked.open();
        settled.reached().await;
        // The other writer's record replaced A's; it writes `api` and gives the lease back.
        plain
            .put("manifest.lease", their_lease().into_bytes())
            .await
            .unwrap();
        let mut m: Manifest = serde_json::from_value(live(&plain).await).unwrap();
        let api = m.services.iter_mut().find(|s| s.name == "api").unwrap();
        api.artifact.store_path.clone_from(&s.api[1]);
        api.revision = Some("api-b".to_owned());
        sign_manifest(&mut m, &key).unwrap();
        plain
            .put("manifest.json", serde_json::to_vec(&m).unwrap())
            .await
            .unwrap();
        plain.delete("manifest.lease").await.unwrap();
        settled.open();
    };
    let (a, ()) = tokio::join!(a, other);
    assert!(a.is_ok(), "{a:?}");
    let now = live(&plain).await;
    assert_eq!(
        service_state(&now, "api"),
        (s.api[1].clone(), "api-b".to_owned()),
        "A wrote over the change another writer made while A's lease was settling: a lost update"
    );
    assert_eq!(
        service_state(&now, "web"),
        (s.web[1].clone(), "web-a".to_owned())
    );
}
