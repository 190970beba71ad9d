//! `ferry push --system HOST TARGET` end to end against a `file://` bucket with the
//! machine's Nix: a stand-in NixOS toplevel (a store path with `bin/switch-to-configuration`,
//! built by nix-build) given as `./result`, and a `configuration.nix` built through a
//! stand-in `<nixpkgs/nixos>` on NIX_PATH; the manifest gets `systems.HOST`, signed, the
//! closure is in the cache for stock `nix copy`, and the services are untouched. Refused
//! before anything is written: a target that is not a system, a hostile host name; a dry
//! run writes nothing. (The agent's side, and this command against Garage, are in
//! `tests/tests/agent_system.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::{build_app, ferry_in, keypair, nix_copy, nonce, publish_web, text};

/// A stand-in NixOS toplevel: `nixos-system-<host>-<version>` with an executable
/// `bin/switch-to-configuration`, referencing `app` so its closure has two paths.
fn build_system(dir: &Path, nonce: &str, version: u32, app: &str) -> String {
    let file = dir.join("system.nix");
    std::fs::write(
        &file,
        format!(
            r#"derivation {{
  name = "nixos-system-biz-{nonce}-{version}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  args = [ "-c" "mkdir -p $out/bin; echo {app} > $out/app; printf '#!/bin/sh\nexit 0\n' > $out/bin/switch-to-configuration; chmod +x $out/bin/switch-to-configuration" ];
}}
"#
        ),
    )
    .unwrap();
    let out = Command::new("nix-build")
        .current_dir(dir)
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "nix-build: {}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn live(bucket: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(bucket.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn push_system_sets_one_hosts_system_and_refuses_what_is_not_one() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-system-1");
    let key = sec.to_str().unwrap();
    let bucket = dir.path().join("bucket");
    let url = format!("file://{}", bucket.display());
    let n = nonce();
    let (app, _) = build_app(dir.path(), &n, 1);
    publish_web(dir.path(), &url, key, &app, "biz");
    let push = |cwd: &Path, args: &[&str]| {
        let mut all = vec!["push"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--bucket", &url, "--key-file", key, "--revision", "sys-1"]);
        ferry_in(cwd, &all, &[])
    };

    // What is not a system, and a hostile host name: refused, nothing written.
    let before = std::fs::read(bucket.join("manifest.json")).unwrap();
    let not_system = push(dir.path(), &["--system", "biz", &app]);
    assert_eq!(not_system.status.code(), Some(2), "{}", text(&not_system));
    assert!(
        String::from_utf8_lossy(&not_system.stderr).contains("is not a NixOS system"),
        "{}",
        text(&not_system)
    );
    let hostile = push(dir.path(), &["--system", "../etc", &app]);
    assert_eq!(hostile.status.code(), Some(2), "{}", text(&hostile));
    assert!(
        String::from_utf8_lossy(&hostile.stderr).contains("not a valid host name"),
        "{}",
        text(&hostile)
    );
    assert_eq!(std::fs::read(bucket.join("manifest.json")).unwrap(), before);

    // `./result` of the toplevel's build, as `nixos-rebuild build` leaves it.
    let system = build_system(dir.path(), &n, 1, &app);
    assert!(dir.path().join("result").is_symlink());
    let dry = push(dir.path(), &["--system", "biz", "./result", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains(&format!("+ system biz ({system})")),
        "{}",
        text(&dry)
    );
    assert_eq!(std::fs::read(bucket.join("manifest.json")).unwrap(), before);

    let pushed = push(dir.path(), &["--system", "biz", "./result"]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    let m = live(&bucket);
    assert_eq!(
        m["systems"],
        json!({"biz": {"storePath": system, "revision": "sys-1"}})
    );
    assert_eq!(m["services"], live_services(&before));
    assert!(
        m["signatures"][0]
            .as_str()
            .unwrap()
            .starts_with("ferry-pt-system-1:")
    );
    assert!(
        String::from_utf8_lossy(&pushed.stderr).contains("pushed the system of host `biz`"),
        "{}",
        text(&pushed)
    );
    // The manifest it replaced is archived, and the closure is in the cache, signed.
    assert!(std::fs::read_dir(bucket.join("manifests")).unwrap().count() >= 1);
    let copied = nix_copy(&bucket, &dir.path().join("store"), &public, &system);
    assert!(copied.status.success(), "{}", text(&copied));

    // A configuration.nix, built the way nixos-rebuild does without flakes, through
    // `<nixpkgs/nixos>` from NIX_PATH: here a stand-in nixpkgs whose `nixos` takes the
    // configuration from `<nixos-config>` and gives a toplevel named after it.
    let nixpkgs = dir.path().join("nixpkgs");
    std::fs::create_dir_all(nixpkgs.join("nixos")).unwrap();
    std::fs::write(
        nixpkgs.join("nixos/default.nix"),
        r#"{ configuration ? import <nixos-config> }: {
  system = derivation {
    name = "nixos-system-${configuration.hostName}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" "mkdir -p $out/bin; printf '#!/bin/sh\nexit 0\n' > $out/bin/switch-to-configuration; chmod +x $out/bin/switch-to-configuration" ];
  };
}
"#,
    )
    .unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("configuration.nix"),
        format!("{{ hostName = \"biz-{n}\"; }}\n"),
    )
    .unwrap();
    let nix_path = format!("nixpkgs={}", nixpkgs.display());
    let from_config = ferry_in(
        &project,
        &[
            "push",
            "--system",
            "biz",
            "configuration.nix",
            "--bucket",
            &url,
            "--key-file",
            key,
        ],
        &[("NIX_PATH", &nix_path)],
    );
    assert!(from_config.status.success(), "{}", text(&from_config));
    let built = live(&bucket)["systems"]["biz"]["storePath"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        built.ends_with(&format!("-nixos-system-biz-{n}")),
        "{built}"
    );
    assert!(
        Path::new(&built)
            .join("bin/switch-to-configuration")
            .is_file()
    );
}

fn live_services(bytes: &[u8]) -> Value {
    serde_json::from_slice::<Value>(bytes).unwrap()["services"].clone()
}
