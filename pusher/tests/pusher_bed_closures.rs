//! Figures: `ferry upload` of all the test bed's service closures (v1, v2, broken,
//! crashing, multi-path) to Garage, timed, then again (everything cached); stock Nix
//! accepts the multi-path closure read back through Garage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Instant;

use ferry_tests::closures::Closures;
use ferry_tests::{Bed, BedOptions};
use support::{ferry, keypair, nix_copy, text};

#[tokio::test]
async fn upload_of_the_bed_closures_to_garage() {
    let closures = Closures::get().unwrap();
    let bed = Bed::start(BedOptions::default()).unwrap();
    let s3 = bed.s3();
    let url = format!(
        "s3://{}?endpoint={}&region={}",
        s3.bucket, s3.endpoint, s3.region
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", s3.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key.as_str()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-figures-1");
    let mut args = vec![
        "upload",
        "--bucket",
        url.as_str(),
        "--key-file",
        sec.to_str().unwrap(),
    ];
    args.extend(closures.services());

    let started = Instant::now();
    let first = ferry(&args, &env);
    let full = started.elapsed();
    assert!(first.status.success(), "{}", text(&first));
    let started = Instant::now();
    let second = ferry(&args, &env);
    let cached = started.elapsed();
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("uploaded 0 paths"),
        "{}",
        text(&second)
    );
    eprintln!(
        "FIGURE full upload of the bed closures: {full:?}\n{}",
        String::from_utf8_lossy(&first.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    eprintln!(
        "FIGURE same upload, all cached: {cached:?}\n{}",
        String::from_utf8_lossy(&second.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );

    // Read the multi-path closure back through Garage into a folder; stock Nix takes it.
    let mirror = dir.path().join("mirror");
    support::mirror(&bed, &mirror).await;
    let copied = nix_copy(&mirror, &dir.path().join("store"), &public, &closures.multi);
    assert!(copied.status.success(), "{}", text(&copied));
    for dep in &closures.multi_deps {
        assert!(
            dir.path()
                .join("store")
                .join(dep.trim_start_matches('/'))
                .exists(),
            "{dep}"
        );
    }
}
