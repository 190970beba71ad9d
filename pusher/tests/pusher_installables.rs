//! The README's first example and the other ways of naming what `ferry push` ships, end to
//! end against a `file://` bucket with the machine's Nix: `ferry push web ./result` (the
//! symlink `nix-build` leaves in the working folder) and a flake installable `.#default`
//! (built with `nix build`); `ferry push web ./app.nix` is refused (a `.nix` target is a
//! whole-host deploy, `--system`). Each push must make the live manifest name the path Nix
//! built, and stock `nix copy` must take that closure from the bucket with the signing key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{build_app, ferry_in, keypair, nix_copy, nonce, publish_web, text};

/// The live manifest's store path for `web`.
fn live_web(bucket: &Path) -> String {
    let live: Value =
        serde_json::from_slice(&std::fs::read(bucket.join("manifest.json")).unwrap()).unwrap();
    live["services"][0]["artifact"]["storePath"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A flake with one package, `default`: a store path whose `version` file says `text`.
/// Flakes evaluate purely (no `builtins.currentSystem`), so the system is spelled out.
fn write_flake(dir: &Path, name: &str, text: &str) {
    let system = format!("{}-linux", std::env::consts::ARCH);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("flake.nix"),
        format!(
            r#"{{
  outputs = {{ self }}: {{
    packages.{system}.default = derivation {{
      name = "{name}";
      system = "{system}";
      builder = "/bin/sh";
      PATH = "/usr/bin:/bin";
      args = [ "-c" "mkdir $out; echo {text} > $out/version" ];
    }};
  }};
}}
"#
        ),
    )
    .unwrap();
}

#[test]
fn push_takes_a_result_link_and_a_flake_installable_and_refuses_a_nix_file() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-inst-1");
    let key = sec.to_str().unwrap();
    let bucket = dir.path().join("bucket");
    let url = format!("file://{}", bucket.display());
    let n = nonce();
    let push = |cwd: &Path, what: &str| {
        let out = ferry_in(
            cwd,
            &["push", "web", what, "--bucket", &url, "--key-file", key],
            &[],
        );
        assert!(
            out.status.success(),
            "ferry push web {what}: {}",
            text(&out)
        );
        live_web(&bucket)
    };

    // The live manifest names web's first version (uploaded by its store path).
    let (app1, _) = build_app(dir.path(), &n, 1);
    publish_web(dir.path(), &url, key, &app1, "h1");

    // The README's first example: `nix-build` left `./result`, and `ferry push web ./result`
    // runs in that folder.
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::copy(dir.path().join("pt.nix"), project.join("pt.nix")).unwrap();
    let built = Command::new("nix-build")
        .current_dir(&project)
        .args([
            "pt.nix", "--argstr", "nonce", &n, "--argstr", "version", "2",
        ])
        .output()
        .unwrap();
    assert!(built.status.success(), "nix-build: {}", text(&built));
    let app2 = String::from_utf8(built.stdout).unwrap().trim().to_owned();
    assert!(project.join("result").is_symlink());
    assert_eq!(push(&project, "./result"), app2);

    // A .nix file is refused, naming both forms it could mean (the original design made a
    // `.nix` target a whole-host NixOS deploy), and nothing is built or written.
    std::fs::write(
        project.join("app.nix"),
        format!("import ./pt.nix {{ nonce = \"{n}\"; version = \"3\"; }}\n"),
    )
    .unwrap();
    let before = std::fs::read(bucket.join("manifest.json")).unwrap();
    let refused = ferry_in(
        &project,
        &[
            "push",
            "web",
            "./app.nix",
            "--bucket",
            &url,
            "--key-file",
            key,
        ],
        &[],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("ferry push --system HOST ./app.nix")
            && err.contains("nix-build ./app.nix")
            && err.contains("ferry push web ./result"),
        "{err}"
    );
    assert_eq!(std::fs::read(bucket.join("manifest.json")).unwrap(), before);

    // A flake installable, as a project with a flake.nix names its package.
    let flake = dir.path().join("flake");
    let text_in = format!("flake-{n}");
    write_flake(&flake, &format!("ferry-pt-flake-{n}"), &text_in);
    let app4 = push(&flake, ".#default");
    assert!(
        app4.ends_with(&format!("-ferry-pt-flake-{n}")),
        "{app4} is not the flake's package"
    );
    assert_eq!(
        std::fs::read_to_string(Path::new(&app4).join("version")).unwrap(),
        format!("{text_in}\n")
    );

    // Every one of them reached the bucket signed: stock Nix takes it with the key.
    for (i, path) in [&app2, &app4].into_iter().enumerate() {
        let store = dir.path().join(format!("store-{i}"));
        let copied = nix_copy(&bucket, &store, &public, path);
        assert!(copied.status.success(), "{path}: {}", text(&copied));
    }
}
