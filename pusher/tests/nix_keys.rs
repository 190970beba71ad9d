//! Key compatibility with the real Nix on this machine (`nix-store`, `nix store sign`,
//! `nix store verify`): a key made by either tool signs, and the other verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use ferry_schema::narinfo::fingerprint;
use ferry_schema::{Manifest, PublicKey, SecretKey};

const EXAMPLE: &str = include_str!("../../schema/tests/fixtures/example.json");

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn nix(args: &[&str]) -> Output {
    let mut all = vec!["--extra-experimental-features", "nix-command"];
    all.extend_from_slice(args);
    run("nix", &all)
}

/// A key name no earlier run used: the store keeps every signature ever added to a path,
/// and an old one under the same name would not verify with this run's key.
fn fresh_key_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An input-addressed store path (content-addressed ones need no signature, which would
/// make every verification below pass vacuously).
fn input_addressed_path() -> String {
    let mut args = ferry_tests::closures::NIX_BUILD_FLAGS.to_vec();
    args.extend([
        "--no-out-link",
        "-E",
        r#"derivation { name = "ferry-key-compat"; builder = "/bin/sh"; args = ["-c" "echo ferry > $out"]; system = builtins.currentSystem; }"#,
    ]);
    ok("nix-build", &args)
}

/// What a narinfo signature covers for `path`, from Nix's own view of it.
fn fingerprint_of(path: &str) -> String {
    let hash = ok("nix-store", &["--query", "--hash", path]);
    let size: u64 = ok("nix-store", &["--query", "--size", path])
        .parse()
        .unwrap();
    let refs: Vec<String> = ok("nix-store", &["--query", "--references", path])
        .lines()
        .map(str::to_owned)
        .collect();
    fingerprint(path, &hash, size, &refs)
}

fn signatures_of(path: &str) -> Vec<String> {
    let out = nix(&["path-info", "--json", path]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["signatures"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn nix_made_key_works_with_ferry() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = (dir.path().join("nix.sec"), dir.path().join("nix.pub"));
    let name = fresh_key_name("nix-made");
    ok(
        "nix-store",
        &["--generate-binary-cache-key", &name, s(&sk), s(&pk)],
    );

    // ferry reads both files.
    let secret = SecretKey::parse(&std::fs::read_to_string(&sk).unwrap()).unwrap();
    let public = PublicKey::parse(&std::fs::read_to_string(&pk).unwrap()).unwrap();
    assert_eq!(secret.public(), public);

    // Nix signs a store path; ferry verifies that signature over its own fingerprint.
    let path = input_addressed_path();
    let out = nix(&["store", "sign", "--key-file", s(&sk), &path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sig = signatures_of(&path)
        .into_iter()
        .find(|s| s.starts_with(&format!("{name}:")))
        .unwrap();
    public
        .verify_detached(fingerprint_of(&path).as_bytes(), &sig)
        .unwrap();
    assert!(public.verify_detached(b"something else", &sig).is_err());

    // ferry signs a manifest with the Nix-made key and verifies it with the Nix-made public key.
    let manifest = dir.path().join("m.json");
    std::fs::write(&manifest, EXAMPLE).unwrap();
    let ferry = env!("CARGO_BIN_EXE_ferry");
    ok(ferry, &["sign", s(&manifest), "--key-file", s(&sk)]);
    let out = ok(
        ferry,
        &["verify", s(&manifest), "--trusted-key-file", s(&pk)],
    );
    assert!(out.contains(&name), "{out}");
    let signed: Manifest =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(
        ferry_schema::verify_manifest(&signed, &[public]).unwrap(),
        name
    );
}

#[test]
fn ferry_made_key_works_with_nix() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = (dir.path().join("ferry.sec"), dir.path().join("ferry.pub"));
    let ferry = env!("CARGO_BIN_EXE_ferry");
    let name = fresh_key_name("ferry-made");
    ok(
        ferry,
        &[
            "keygen",
            "--name",
            &name,
            "--secret-key-file",
            s(&sk),
            "--public-key-file",
            s(&pk),
        ],
    );
    let public = std::fs::read_to_string(&pk).unwrap();
    let path = input_addressed_path();

    // Nix signs with ferry's secret key file and checks with ferry's public key file.
    let out = nix(&["store", "sign", "--key-file", s(&sk), &path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = nix(&[
        "store",
        "verify",
        "--no-contents",
        "--sigs-needed",
        "1",
        "--trusted-public-keys",
        &public,
        &path,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nix_accepts_a_narinfo_signature_made_by_ferry() {
    let dir = tempfile::tempdir().unwrap();
    let path = input_addressed_path();
    let cache = dir.path().join("cache");
    let url = format!("file://{}", cache.display());
    let out = nix(&["copy", "--to", &url, &path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Replace whatever signatures the copy carried by one from a key only ferry has seen.
    let key = SecretKey::generate("ferry-only-1").unwrap();
    let hash_part = path
        .trim_start_matches("/nix/store/")
        .split('-')
        .next()
        .unwrap();
    let narinfo_path = cache.join(format!("{hash_part}.narinfo"));
    let narinfo = std::fs::read_to_string(&narinfo_path).unwrap();
    let mut lines: Vec<String> = narinfo
        .lines()
        .filter(|l| !l.starts_with("Sig:"))
        .map(str::to_owned)
        .collect();
    let sig = key.sign_detached(fingerprint_of(&path).as_bytes());
    lines.push(format!("Sig: {sig}"));
    std::fs::write(&narinfo_path, lines.join("\n") + "\n").unwrap();

    let verify = |trusted: &str| {
        nix(&[
            "store",
            "verify",
            "--store",
            &url,
            "--no-contents",
            "--sigs-needed",
            "1",
            "--trusted-public-keys",
            trusted,
            &path,
        ])
    };
    let out = verify(&key.public().to_nix_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And Nix really checks: another key with the same name is refused.
    let impostor = SecretKey::generate("ferry-only-1").unwrap();
    assert!(!verify(&impostor.public().to_nix_string()).status.success());
}
