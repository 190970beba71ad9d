//! `ferry gc` against the test bed's real Garage: four versions of a service pushed (one
//! archived months ago, two recently, one live) plus an upload no manifest names. The dry
//! run (the default) deletes nothing; the age limit protects fresh uploads; `--delete`
//! removes exactly the closures no kept manifest needs, and stock `nix copy` still fetches
//! every kept closure from what is left; a rollback to a collected generation is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::process::Output;

use ferry_tests::{Bed, BedOptions};
use serde_json::json;
use support::{Target, build_app, keypair, nix_copy, nonce, objects, text};

fn narinfo_key(store_path: &str) -> String {
    let base = store_path.rsplit('/').next().unwrap();
    format!("{}.narinfo", &base[..32])
}

fn nar_url(narinfo: &[u8]) -> String {
    String::from_utf8_lossy(narinfo)
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap()
        .to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn gc_keeps_what_kept_manifests_need_and_deletes_the_rest() {
    let bed = Bed::start(BedOptions::default()).unwrap();
    let g = Target::garage(&bed);
    let dir = tempfile::tempdir().unwrap();
    let (sec, public) = keypair(dir.path(), "ferry-pt-gc-1");
    let key = sec.to_str().unwrap();
    let n = nonce();
    let apps: Vec<String> = (1..=5).map(|v| build_app(dir.path(), &n, v).0).collect();
    let (_, lib) = build_app(dir.path(), &n, 1);

    // Version 1 published with a generation months old, 2-4 pushed now, 5 only uploaded.
    let up = g.run(&["upload", "--quiet", "--key-file", key, &apps[0], &apps[4]]);
    assert!(up.status.success(), "{}", text(&up));
    let manifest = json!({
        "version": 1, "generation": "2026-01-01T00:00:00Z",
        "services": [{"name": "web", "artifact": {"type": "nix-closure", "storePath": apps[0]},
                      "hosts": ["h1"], "exec": {"command": "app"}}]
    });
    let file = dir.path().join("m.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let published = g.run(&["publish", file.to_str().unwrap(), "--key-file", key]);
    assert!(published.status.success(), "{}", text(&published));
    for app in &apps[1..4] {
        let pushed = g.run(&["push", "web", app, "--key-file", key, "--quiet"]);
        assert!(pushed.status.success(), "{}", text(&pushed));
    }
    let before = objects(&bed).await;
    let narinfos = |m: &BTreeMap<String, Vec<u8>>| {
        m.keys()
            .filter(|k| k.ends_with(".narinfo"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(narinfos(&before).len(), 6, "5 apps and the shared lib");

    // Defaults: a dry run, and everything is younger than the 24 h age limit.
    let default = g.run(&["gc"]);
    assert!(default.status.success(), "{}", text(&default));
    assert!(
        stderr(&default).contains("nothing to delete"),
        "{}",
        text(&default)
    );

    // Without the age limit, the default keeps every archive of the last 30 days: version 1
    // (archived as 2026-01-01) and the never-published version 5 would go. Dry run.
    let dry = g.run(&["gc", "--min-age-hours", "0"]);
    assert!(dry.status.success(), "{}", text(&dry));
    let listed = stdout(&dry);
    for (i, app) in apps.iter().enumerate() {
        let named = listed.contains(&narinfo_key(app));
        assert_eq!(named, i == 0 || i == 4, "app {}: {}", i + 1, text(&dry));
    }
    assert!(!listed.contains(&narinfo_key(&lib)), "{}", text(&dry));
    assert!(
        stderr(&dry).contains("would delete 2 narinfos and 2 NARs"),
        "{}",
        text(&dry)
    );
    assert_eq!(objects(&bed).await, before, "a dry run deleted something");

    // Keep only the newest archived manifest (version 3) and the live one (version 4).
    let dry = g.run(&["gc", "--keep", "1", "--min-age-hours", "0", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    let expected_gone: Vec<usize> = vec![0, 1, 4];
    for (i, app) in apps.iter().enumerate() {
        assert_eq!(
            stdout(&dry).contains(&narinfo_key(app)),
            expected_gone.contains(&i),
            "app {}: {}",
            i + 1,
            text(&dry)
        );
    }
    assert_eq!(objects(&bed).await, before, "a dry run deleted something");

    let deleted = g.run(&[
        "gc",
        "--keep",
        "1",
        "--min-age-hours",
        "0",
        "--delete",
        "--key-file",
        key,
    ]);
    assert!(deleted.status.success(), "{}", text(&deleted));
    eprintln!("{}", text(&deleted));
    let after = objects(&bed).await;
    for (i, app) in apps.iter().enumerate() {
        let k = narinfo_key(app);
        let url = nar_url(&before[&k]);
        let gone = expected_gone.contains(&i);
        assert_eq!(!after.contains_key(&k), gone, "narinfo of app {}", i + 1);
        assert_eq!(!after.contains_key(&url), gone, "NAR of app {}", i + 1);
    }
    assert!(after.contains_key(&narinfo_key(&lib)));
    // What gc never touches is untouched; the cache index lists what is kept, and nothing
    // that went.
    for (k, v) in &before {
        if !k.ends_with(".narinfo") && !k.starts_with("nar/") && k != "ferry-cache-index.json" {
            assert_eq!(after.get(k), Some(v), "{k} changed");
        }
    }
    let index = ferry_pusher::cache_index::parse(&after["ferry-cache-index.json"]).unwrap();
    for (i, app) in apps.iter().enumerate() {
        let hash = &narinfo_key(app)[..32];
        assert_eq!(
            index.index.hashes.contains(hash),
            !expected_gone.contains(&i),
            "app {} in the index: {:?}",
            i + 1,
            index.index.hashes
        );
    }
    // No narinfo is left without its NAR, and no NAR without a narinfo.
    let urls: Vec<String> = narinfos(&after)
        .iter()
        .map(|k| nar_url(&after[k]))
        .collect();
    for url in &urls {
        assert!(after.contains_key(url), "{url} missing");
    }
    assert_eq!(
        after.keys().filter(|k| k.starts_with("nar/")).count(),
        urls.len()
    );

    // Stock Nix fetches every kept closure from what is left, and not a collected one.
    let cache = dir.path().join("mirror");
    for (k, v) in &after {
        let path = cache.join(k);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, v).unwrap();
    }
    for (i, app) in apps.iter().enumerate().skip(2).take(2) {
        let store = dir.path().join(format!("store-{i}"));
        let copied = nix_copy(&cache, &store, &public, app);
        assert!(copied.status.success(), "app {}: {}", i + 1, text(&copied));
        assert!(store.join(lib.trim_start_matches('/')).exists());
    }
    let gone = nix_copy(&cache, &dir.path().join("store-gone"), &public, &apps[0]);
    assert!(!gone.status.success(), "{}", text(&gone));

    // Nothing left to collect; a rollback to the collected version 2 is refused.
    let again = g.run(&["gc", "--keep", "1", "--min-age-hours", "0", "--delete"]);
    assert!(
        stderr(&again).contains("nothing to delete"),
        "{}",
        text(&again)
    );
    let back = g.run(&["rollback", "--steps", "2", "--key-file", key]);
    assert_eq!(back.status.code(), Some(1), "{}", text(&back));
    assert!(stderr(&back).contains(&apps[1]), "{}", text(&back));
    let back = g.run(&["rollback", "--key-file", key]);
    assert!(back.status.success(), "{}", text(&back));
}
