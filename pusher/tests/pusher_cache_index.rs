//! The cache index (`ferry-cache-index.json`) against the test bed's real Garage, with a
//! 40-path closure (39 small paths and a top path referencing them all): an incremental
//! push costs a bounded number of requests whatever the closure's size; `ferry gc` takes
//! what it deletes out of the index, so a later push uploads it again; a path another tool
//! put in the bucket is found by lookup and added; a planted index is ignored; a bucket
//! without an index (an older one) works as before and gets one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use ferry_bucket::S3Bucket;
use ferry_pusher::cache_index::{CacheIndex, Parsed, hash_of, parse, render, verify};
use ferry_schema::{PublicKey, SecretKey};
use ferry_tests::{Bed, BedOptions};
use serde_json::json;
use support::inproc::assert_closure_present;
use support::{Target, keypair, mirror, nix_copy, nonce, text};

const INDEX: &str = "ferry-cache-index.json";

/// Paths in the closure besides the top one.
const LEAVES: usize = 39;

/// `LEAVES` small paths and a top path referencing them all; `top` changes only the top.
const EXPRESSION: &str = r#"
{ nonce, top, leaves }:
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  };
  leaf = i: mk "ferry-ci-${nonce}-p${toString i}" "mkdir $out; echo ${nonce} ${toString i} > $out/data";
in mk "ferry-ci-${nonce}-top-${top}" "mkdir $out; echo ${toString (builtins.genList leaf (builtins.fromJSON leaves))} > $out/deps; echo ${top} > $out/top"
"#;

/// Builds the closure's top path `top`; returns (top, every path of its closure).
fn build(dir: &Path, nonce: &str, top: &str) -> (String, Vec<String>) {
    let file = dir.join("ci.nix");
    std::fs::write(&file, EXPRESSION).unwrap();
    let out = Command::new("nix-build")
        .args(["--no-out-link", file.to_str().unwrap()])
        .args(["--argstr", "nonce", nonce, "--argstr", "top", top])
        .args(["--argstr", "leaves", &LEAVES.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "nix-build: {}", text(&out));
    let top = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let q = Command::new("nix-store")
        .args(["-qR", &top])
        .output()
        .unwrap();
    assert!(q.status.success(), "nix-store -qR: {}", text(&q));
    let closure: Vec<String> = String::from_utf8(q.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(closure.len(), LEAVES + 1, "{closure:?}");
    (top, closure)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// (paths uploaded, requests) from the summary line `uploaded N paths (…); R requests, S s`.
fn summary(o: &Output) -> (usize, u64) {
    let err = stderr(o);
    let line = err
        .lines()
        .find(|l| l.starts_with("uploaded ") && l.contains(" requests, "))
        .unwrap_or_else(|| panic!("no summary line\n{}", text(o)));
    let uploaded = line["uploaded ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let requests = line
        .split("; ")
        .last()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (uploaded, requests)
}

fn hashes(paths: &[String]) -> BTreeSet<String> {
    paths.iter().map(|p| hash_of(p).unwrap()).collect()
}

/// The index in the bucket, parsed; panics when there is none or it does not parse.
fn index(t: &Target) -> Parsed {
    let bytes = t.object(INDEX).expect("no cache index in the bucket");
    parse(&bytes).unwrap()
}

fn public_key(text: &str) -> PublicKey {
    PublicKey::parse(text).unwrap()
}

fn secret_key(file: &Path) -> SecretKey {
    SecretKey::parse(&std::fs::read_to_string(file).unwrap()).unwrap()
}

fn put_object(bed: &Bed, key: &str, bytes: Vec<u8>) {
    let s3 = bed.s3();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        s3.client()
            .put_object()
            .bucket(&s3.bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .unwrap();
    });
}

fn delete_object(bed: &Bed, key: &str) {
    let s3 = bed.s3();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        s3.client()
            .delete_object()
            .bucket(&s3.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    });
}

/// Publishes a manifest with service `web` at `app`.
fn publish(t: &Target, dir: &Path, key: &str, app: &str) {
    let manifest = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": app},
                      "hosts": ["h1"], "exec": {"command": "app"}}]
    });
    let file = dir.join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let out = t.run(&["publish", file.to_str().unwrap(), "--key-file", key]);
    assert!(out.status.success(), "{}", text(&out));
}

fn push(t: &Target, key: &str, app: &str) -> Output {
    let out = t.run(&["push", "web", app, "--key-file", key, "--revision", "r"]);
    assert!(out.status.success(), "{}", text(&out));
    out
}

/// Every path of `top`'s closure has its narinfo and whole NAR in the bucket, and stock
/// Nix trusting only `public` fetches `top` from a copy of the bucket.
fn assert_cache_complete(bed: &Bed, dir: &Path, public: &str, top: &str) {
    let s3 = bed.s3();
    let copy = tempfile::tempdir_in(dir).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let bucket = S3Bucket::from_client(s3.client(), &s3.bucket);
        assert_closure_present(&bucket, top).await;
        mirror(bed, copy.path()).await;
    });
    let store = tempfile::tempdir_in(dir).unwrap();
    let copied = nix_copy(copy.path(), store.path(), public, top);
    assert!(copied.status.success(), "{}", text(&copied));
}

/// Goal 3 of issue 19: one changed path in a 40-path closure costs its two uploads and at
/// most 10 other requests; without the index the same push costs one lookup per path.
#[test]
fn an_incremental_push_makes_a_bounded_number_of_requests() {
    let bed = Bed::start(BedOptions::default()).unwrap();
    let t = Target::garage(&bed);
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-ci-count-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let (top1, closure1) = build(dir.path(), &n, "1");
    let (top2, closure2) = build(dir.path(), &n, "2");
    let (top3, _) = build(dir.path(), &n, "3");

    let up = t.run(&["upload", "--key-file", key, &top1]);
    assert!(up.status.success(), "{}", text(&up));
    assert_eq!(summary(&up).0, LEAVES + 1, "{}", text(&up));
    let written = index(&t);
    assert_eq!(written.index.hashes, hashes(&closure1));
    assert_eq!(
        verify(&written, &[public_key(&public)]).unwrap(),
        "ferry-pt-ci-count-1"
    );
    publish(&t, dir.path(), key, &top1);

    let pushed = push(&t, key, &top2);
    let (uploaded, requests) = summary(&pushed);
    eprintln!(
        "incremental push of 1 changed path in a {}-path closure with the index: {requests} requests\n{}",
        LEAVES + 1,
        text(&pushed)
    );
    assert_eq!(uploaded, 1, "{}", text(&pushed));
    assert!(
        requests <= 2 + 10,
        "{requests} requests for one changed path (NAR + narinfo) in a {}-path closure\n{}",
        LEAVES + 1,
        text(&pushed)
    );
    let mut both = closure1.clone();
    both.extend(closure2);
    assert_eq!(index(&t).index.hashes, hashes(&both));

    // The same push without the index: a lookup per path.
    delete_object(&bed, INDEX);
    let pushed = push(&t, key, &top3);
    let (uploaded, without) = summary(&pushed);
    eprintln!("the same without the index: {without} requests");
    assert_eq!(uploaded, 1, "{}", text(&pushed));
    assert!(without > LEAVES as u64 + 1, "{}", text(&pushed));
    assert_cache_complete(&bed, dir.path(), &public, &top3);
}

/// A bucket without an index (written by an older ferry) works as before, and the upload
/// leaves a signed index listing the closure.
#[test]
fn a_bucket_without_an_index_gets_one() {
    let bed = Bed::start(BedOptions::default()).unwrap();
    let t = Target::garage(&bed);
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-ci-older-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let (top1, _) = build(dir.path(), &n, "1");
    let (top2, closure2) = build(dir.path(), &n, "2");
    let up = t.run(&["upload", "--key-file", key, &top1]);
    assert!(up.status.success(), "{}", text(&up));
    delete_object(&bed, INDEX);
    assert!(t.object(INDEX).is_none());

    let again = t.run(&["upload", "--key-file", key, &top2]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(summary(&again).0, 1, "{}", text(&again));
    assert!(
        !stderr(&again).contains("warning"),
        "no index is not worth a warning\n{}",
        text(&again)
    );
    let written = index(&t);
    assert_eq!(written.index.hashes, hashes(&closure2));
    assert!(verify(&written, &[public_key(&public)]).is_ok());
    assert_cache_complete(&bed, dir.path(), &public, &top2);
}

/// The attack: anyone who can write to the bucket plants an index listing a closure that
/// is not there, unsigned or signed by a key the pusher does not trust. Were it believed,
/// the upload would skip every path and the manifest would name a closure hosts cannot
/// fetch. It is ignored with a one-line warning, every path is looked up and uploaded, and
/// the index is replaced by a signed one.
#[test]
fn a_planted_index_is_ignored() {
    let bed = Bed::start(BedOptions::default()).unwrap();
    let t = Target::garage(&bed);
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-ci-planted-1");
    let (stranger, _) = keypair(dir.path(), "ferry-pt-ci-stranger-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    for (round, signer) in [(1, None), (2, Some(secret_key(&stranger)))] {
        let (top, closure) = build(dir.path(), &format!("{n}r{round}"), "1");
        let planted = CacheIndex {
            epoch: "00".into(),
            hashes: hashes(&closure),
        };
        put_object(&bed, INDEX, render(&planted, signer.as_ref()));
        let up = t.run(&["upload", "--key-file", key, &top]);
        assert!(up.status.success(), "{}", text(&up));
        assert_eq!(
            summary(&up).0,
            LEAVES + 1,
            "round {round}: the planted index made the upload skip paths\n{}",
            text(&up)
        );
        let warnings: Vec<String> = stderr(&up)
            .lines()
            .filter(|l| l.contains(INDEX))
            .map(str::to_owned)
            .collect();
        assert_eq!(warnings.len(), 1, "{}", text(&up));
        assert!(warnings[0].starts_with("warning: ignoring"), "{warnings:?}");
        assert_cache_complete(&bed, dir.path(), &public, &top);
        let written = index(&t);
        assert!(verify(&written, &[public_key(&public)]).is_ok());
        assert_eq!(written.index.hashes, hashes(&closure));
    }
}

/// `ferry gc --delete` takes the paths it deletes out of the index (re-signed with the key;
/// emptied without one), so the push of a closure needing them uploads them again and the
/// cache is complete.
#[test]
fn paths_gc_deleted_are_uploaded_again() {
    let bed = Bed::start(BedOptions::default()).unwrap();
    let t = Target::garage(&bed);
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-ci-gc-1");
    let key = sec.to_str().unwrap();
    let (old, old_closure) = build(dir.path(), &format!("o{}", nonce()), "1");
    let (new, new_closure) = build(dir.path(), &format!("n{}", nonce()), "1");
    let up = t.run(&["upload", "--quiet", "--key-file", key, &old]);
    assert!(up.status.success(), "{}", text(&up));
    publish(&t, dir.path(), key, &old);

    for (round, gc_key) in [(1, Some(key)), (2, None)] {
        // `old` only in an archived manifest, which `--keep 0` does not keep.
        push(&t, key, &new);
        let mut gc = vec!["gc", "--keep", "0", "--min-age-hours", "0", "--delete"];
        if let Some(k) = gc_key {
            gc.extend(["--key-file", k]);
        }
        let collected = t.run(&gc);
        assert!(collected.status.success(), "{}", text(&collected));
        eprintln!("round {round}: {}", text(&collected));
        assert!(
            t.object(&format!("{}.narinfo", hash_of(&old).unwrap()))
                .is_none()
        );
        let after = index(&t);
        assert!(
            after.index.hashes.is_disjoint(&hashes(&old_closure)),
            "round {round}: the index still lists deleted paths"
        );
        if gc_key.is_some() {
            assert_eq!(after.index.hashes, hashes(&new_closure));
            assert!(verify(&after, &[public_key(&public)]).is_ok());
        } else {
            assert!(after.index.hashes.is_empty());
        }

        let back = push(&t, key, &old);
        assert_eq!(
            summary(&back).0,
            LEAVES + 1,
            "round {round}\n{}",
            text(&back)
        );
        assert_cache_complete(&bed, dir.path(), &public, &old);
        assert!(index(&t).index.hashes.is_superset(&hashes(&old_closure)));
    }
}

/// A path another tool put in the bucket (`nix copy --to file://…` with the same key, its
/// objects copied into the bucket) is not in the index: the upload looks it up, finds it
/// signed by a trusted key, does not upload it again, and adds it to the index.
#[test]
fn a_path_another_tool_uploaded_is_found_and_added() {
    let bed = Bed::start(BedOptions::default()).unwrap();
    let t = Target::garage(&bed);
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-ci-other-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let (top1, closure1) = build(dir.path(), &n, "1");
    let up = t.run(&["upload", "--quiet", "--key-file", key, &top1]);
    assert!(up.status.success(), "{}", text(&up));

    // Another closure sharing nothing; one of its leaves goes up with `nix copy`.
    let (top2, closure2) = build(dir.path(), &format!("x{n}"), "1");
    let leaf = closure2.iter().find(|p| **p != top2).unwrap().clone();
    let cache = dir.path().join("nix-copy");
    let copy = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "copy"])
        .arg("--to")
        .arg(format!("file://{}?secret-key={key}", cache.display()))
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", text(&copy));
    let mut copied = Vec::new();
    for entry in walk(&cache) {
        let name = entry
            .strip_prefix(&cache)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        if name != "nix-cache-info" {
            put_object(&bed, &name, std::fs::read(&entry).unwrap());
            copied.push(name);
        }
    }
    let leaf_key = format!("{}.narinfo", hash_of(&leaf).unwrap());
    assert!(copied.contains(&leaf_key), "{copied:?}");
    let before = t.object(&leaf_key).unwrap();

    let up = t.run(&["upload", "--key-file", key, &top2]);
    assert!(up.status.success(), "{}", text(&up));
    assert_eq!(summary(&up).0, LEAVES, "{}", text(&up));
    assert_eq!(
        t.object(&leaf_key).unwrap(),
        before,
        "the narinfo nix copy wrote was replaced"
    );
    let mut both = closure1;
    both.extend(closure2);
    assert_eq!(index(&t).index.hashes, hashes(&both));
    assert_cache_complete(&bed, dir.path(), &public, &top2);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
