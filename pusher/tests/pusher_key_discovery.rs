//! Where `ferry` finds the signing key when nothing on its command line, in its environment
//! or in its config file names one: the original design's `~/.config/nix/cache-priv-key.pem`
//! and `NIX_CACHE_KEY`, and it says which it used. Real binary, `file://` bucket, real
//! closures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;
use support::{build_app, keypair, nonce, text};

/// `ferry ARGS` for a developer whose home is `home`, with nothing naming a key unless
/// `env` does.
fn ferry_at_home(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("FERRY_BUCKET")
        .env_remove("FERRY_KEY_FILE")
        .env_remove("NIX_CACHE_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A home with a manifest for `app` and a `file://` bucket URL: (manifest file, URL).
fn manifest_for(dir: &Path, app: &str) -> (String, String) {
    let manifest = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": app},
                      "hosts": ["h1"], "exec": {"command": "app"}}]
    });
    let file = dir.join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    (
        file.to_str().unwrap().to_owned(),
        format!("file://{}", dir.join("bucket").display()),
    )
}

/// The key name of the live manifest's signatures.
fn live_signers(dir: &Path) -> Vec<String> {
    let live: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("bucket/manifest.json")).unwrap()).unwrap();
    live["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().split(':').next().unwrap().to_owned())
        .collect()
}

#[test]
fn the_key_in_nixs_config_folder_signs_when_nothing_names_one() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let nix_dir = home.join(".config/nix");
    std::fs::create_dir_all(&nix_dir).unwrap();
    let (sec, _) = keypair(dir.path(), "ferry-pt-nixdir-1");
    let pem = nix_dir.join("cache-priv-key.pem");
    std::fs::copy(&sec, &pem).unwrap();
    let (app, _) = build_app(dir.path(), &nonce(), 1);
    let (file, url) = manifest_for(dir.path(), &app);

    let up = ferry_at_home(&home, &["upload", "--bucket", &url, &app], &[]);
    assert!(up.status.success(), "{}", text(&up));
    let said = format!("signing key ferry-pt-nixdir-1 from {}", pem.display());
    assert!(stderr(&up).contains(&said), "{}", text(&up));
    let published = ferry_at_home(&home, &["publish", &file, "--bucket", &url], &[]);
    assert!(published.status.success(), "{}", text(&published));
    assert!(stderr(&published).contains(&said), "{}", text(&published));
    assert_eq!(live_signers(dir.path()), ["ferry-pt-nixdir-1"]);
    let signed = dir.path().join("signed.json");
    let sign = ferry_at_home(
        &home,
        &["sign", &file, "--out", signed.to_str().unwrap()],
        &[],
    );
    assert!(sign.status.success(), "{}", text(&sign));
    assert!(stderr(&sign).contains(&said), "{}", text(&sign));
}

#[test]
fn nix_cache_key_holds_the_key_or_its_file_and_wins_over_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let nix_dir = home.join(".config/nix");
    std::fs::create_dir_all(&nix_dir).unwrap();
    let (folder_key, _) = keypair(dir.path(), "ferry-pt-folder-1");
    std::fs::copy(&folder_key, nix_dir.join("cache-priv-key.pem")).unwrap();
    let (env_key, _) = keypair(dir.path(), "ferry-pt-env-1");
    let key_text = std::fs::read_to_string(&env_key).unwrap();
    let (app, _) = build_app(dir.path(), &nonce(), 1);
    let (file, url) = manifest_for(dir.path(), &app);

    // The key itself in the variable (as CI secrets are handed over).
    let up = ferry_at_home(
        &home,
        &["upload", "--bucket", &url, &app],
        &[("NIX_CACHE_KEY", &key_text)],
    );
    assert!(up.status.success(), "{}", text(&up));
    assert!(
        stderr(&up).contains("signing key ferry-pt-env-1 from $NIX_CACHE_KEY"),
        "{}",
        text(&up)
    );
    // The path of a key file in the variable.
    let published = ferry_at_home(
        &home,
        &["publish", &file, "--bucket", &url],
        &[("NIX_CACHE_KEY", env_key.to_str().unwrap())],
    );
    assert!(published.status.success(), "{}", text(&published));
    assert!(
        stderr(&published).contains(&format!(
            "signing key ferry-pt-env-1 from {} ($NIX_CACHE_KEY)",
            env_key.display()
        )),
        "{}",
        text(&published)
    );
    assert_eq!(live_signers(dir.path()), ["ferry-pt-env-1"]);

    // Neither a key nor an absolute path: refused, naming the variable.
    let bad = ferry_at_home(&home, &["sign", &file], &[("NIX_CACHE_KEY", "not-a-key")]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        stderr(&bad).contains("NIX_CACHE_KEY") && stderr(&bad).contains("name:base64"),
        "{}",
        text(&bad)
    );
}

#[test]
fn a_named_key_wins_and_without_any_ferry_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".config/nix")).unwrap();
    let (folder_key, _) = keypair(dir.path(), "ferry-pt-folder-1");
    std::fs::copy(&folder_key, home.join(".config/nix/cache-priv-key.pem")).unwrap();
    let (named, _) = keypair(dir.path(), "ferry-pt-named-1");
    let (app, _) = build_app(dir.path(), &nonce(), 1);
    let (file, url) = manifest_for(dir.path(), &app);

    let up = ferry_at_home(
        &home,
        &["upload", "--bucket", &url, &app],
        &[("FERRY_KEY_FILE", named.to_str().unwrap())],
    );
    assert!(up.status.success(), "{}", text(&up));
    assert!(!stderr(&up).contains("signing key"), "{}", text(&up));
    let published = ferry_at_home(
        &home,
        &[
            "publish",
            &file,
            "--bucket",
            &url,
            "--key-file",
            named.to_str().unwrap(),
        ],
        &[("NIX_CACHE_KEY", "not-a-key")],
    );
    assert!(published.status.success(), "{}", text(&published));
    assert_eq!(live_signers(dir.path()), ["ferry-pt-named-1"]);

    let empty_home = dir.path().join("empty");
    std::fs::create_dir_all(&empty_home).unwrap();
    let none = ferry_at_home(&empty_home, &["sign", &file], &[]);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
    for place in [
        "--key-file",
        "FERRY_KEY_FILE",
        "key_file",
        "NIX_CACHE_KEY",
        &format!("{}/.config/nix/cache-priv-key.pem", empty_home.display()),
        "ferry keygen",
    ] {
        assert!(stderr(&none).contains(place), "{place}: {}", text(&none));
    }
}
