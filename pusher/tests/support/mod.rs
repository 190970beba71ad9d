//! Shared by the pusher's end-to-end tests: running the real `ferry` binary, building tiny
//! real closures with the machine's nix-build, keys, and stock `nix copy` checks.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Three derivations: a shared library, and two apps that reference it. `nonce` makes
/// every test's store paths its own.
const EXPRESSION: &str = r#"
{ nonce, version }:
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  };
  lib = mk "ferry-pt-lib-${nonce}" "mkdir $out; seq 1 50000 > $out/data";
in mk "ferry-pt-app-${nonce}-${version}" "mkdir $out; echo ${lib} > $out/lib; echo ${version} > $out/version; seq 1 ${version}0000 > $out/more"
"#;

/// Runs `ferry` with `args` and extra environment.
pub fn ferry(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .env_remove("FERRY_BUCKET")
        .env_remove("FERRY_KEY_FILE");
    // A config file of the machine's user must not leak into tests.
    cmd.env("XDG_CONFIG_HOME", "/nonexistent-ferry-test-config");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh signing key pair made by `ferry keygen`: (secret file, public key text).
pub fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let sec = dir.join(format!("{name}.sec"));
    let public = dir.join(format!("{name}.pub"));
    let out = ferry(
        &[
            "keygen",
            "--name",
            name,
            "--secret-key-file",
            sec.to_str().unwrap(),
            "--public-key-file",
            public.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    (
        sec,
        std::fs::read_to_string(public).unwrap().trim().to_owned(),
    )
}

/// Builds app `version` (1, 2, …) of the tiny closure; returns (app, lib) store paths.
pub fn build_app(dir: &Path, nonce: &str, version: u32) -> (String, String) {
    let file = dir.join("pt.nix");
    std::fs::write(&file, EXPRESSION).unwrap();
    let out = Command::new("nix-build")
        .args(["--no-out-link", file.to_str().unwrap()])
        .args([
            "--argstr",
            "nonce",
            nonce,
            "--argstr",
            "version",
            &version.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "nix-build: {}", text(&out));
    let app = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let lib = std::fs::read_to_string(Path::new(&app).join("lib"))
        .unwrap()
        .trim()
        .to_owned();
    (app, lib)
}

/// A nonce unique to this process and moment.
pub fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}x{t}", std::process::id())
}

/// Stock `nix copy --from file://CACHE` of `path` into a fresh chroot store at `store`,
/// trusting only `public_key`.
pub fn nix_copy(cache: &Path, store: &Path, public_key: &str, path: &str) -> Output {
    Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "copy"])
        .arg("--from")
        .arg(format!("file://{}", cache.display()))
        .arg("--to")
        .arg(store)
        .args(["--option", "substituters", ""])
        .args(["--option", "trusted-public-keys", public_key])
        .arg(path)
        .output()
        .unwrap()
}

/// Number of NAR files in a `file://` bucket.
pub fn nar_count(bucket: &Path) -> usize {
    std::fs::read_dir(bucket.join("nar")).map_or(0, |d| d.count())
}
