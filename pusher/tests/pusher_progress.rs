//! Upload progress as users see it: one plain line per uploaded path (with bytes, rate and
//! ETA) when stderr is not a terminal, none with `--quiet`, and a live bar on a terminal
//! (a pseudo-terminal from util-linux `script`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::{build_app, ferry, keypair, nonce, text};

#[test]
fn plain_lines_when_not_a_terminal_and_none_when_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, _) = keypair(dir.path(), "ferry-pt-progress-1");
    let (app, lib) = build_app(dir.path(), &nonce(), 3);
    let upload = |bucket: &str, quiet: bool| {
        let url = format!("file://{}", dir.path().join(bucket).display());
        let mut args = vec![
            "upload",
            "--bucket",
            &url,
            "--key-file",
            sec.to_str().unwrap(),
        ];
        if quiet {
            args.push("--quiet");
        }
        args.push(&app);
        let out = ferry(&args, &[]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let stderr = upload("plain", false);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    for path in [&app, &lib] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("uploaded {path} ("))),
            "no line for {path}:\n{stderr}"
        );
    }
    assert!(lines.iter().any(|l| l.starts_with("[1/2] ")), "{stderr}");
    let last = lines.iter().find(|l| l.starts_with("[2/2] ")).unwrap();
    assert!(last.contains("/s, ETA "), "{last}");
    assert!(
        !stderr.contains('\r'),
        "no bar drawing off a terminal: {stderr:?}"
    );

    let quiet = upload("quiet", true);
    assert!(quiet.trim().is_empty(), "--quiet printed: {quiet}");
}

#[test]
fn a_bar_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (sec, _) = keypair(dir.path(), "ferry-pt-progress-2");
    let (app, _) = build_app(dir.path(), &nonce(), 4);
    let url = format!("file://{}", dir.path().join("bucket").display());
    let command = format!(
        "{} upload --bucket {url} --key-file {} {app}",
        env!("CARGO_BIN_EXE_ferry"),
        sec.display()
    );
    // `script` runs the command on a pseudo-terminal and copies what it drew to stdout.
    let out = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("XDG_CONFIG_HOME", "/nonexistent-ferry-test-config")
        .env_remove("FERRY_BUCKET")
        .env_remove("FERRY_KEY_FILE")
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let drawn = String::from_utf8_lossy(&out.stdout);
    // Drawing is rate-limited: which counts appear depends on timing, the bar itself not.
    assert!(drawn.contains("/2 paths"), "no bar in: {drawn:?}");
    assert!(
        !drawn.contains("[1/2] uploaded"),
        "plain lines on a terminal: {drawn:?}"
    );
}
